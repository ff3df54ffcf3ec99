"""`python -m jupyter_remote` is the `jupyter-remote` command."""

from jupyter_remote.cli import main

main()
