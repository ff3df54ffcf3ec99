"""The server's client of the executor agents."""
