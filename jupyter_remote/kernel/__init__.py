"""What runs in a user's kernel: magics, widgets, the Python API, variables, transfers, engine states."""
