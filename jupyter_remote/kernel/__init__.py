"""What runs in a user's kernel: magics, widgets, the Python API, the Execution handle,
variables, transfers and engine states."""
