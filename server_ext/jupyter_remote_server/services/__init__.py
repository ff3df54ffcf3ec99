"""The services the RemoteManager owns: executions, jobs, kernel sessions."""
