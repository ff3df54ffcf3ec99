"""Entry point: ``python3 /opt/jupyter-remote/runner --socket S --spool D`` or ``-m``.

Run as a directory, ``sys.path[0]`` is this directory and the sibling modules import as
top-level modules; run with ``-m jupyter_remote.runner`` the directory is put first on the path
so that both ways load the same files the same way.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if not sys.path or os.path.abspath(sys.path[0] or ".") != HERE:
    sys.path.insert(0, HERE)

import runnerd  # noqa: E402

if __name__ == "__main__":
    sys.exit(runnerd.main(sys.argv[1:]))
