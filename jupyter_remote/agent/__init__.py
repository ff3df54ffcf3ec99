"""The executor agent: runs commands from the server extension inside Docker containers."""
