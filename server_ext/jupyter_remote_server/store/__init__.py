"""Where the server keeps its records (SQLite) and how long."""
