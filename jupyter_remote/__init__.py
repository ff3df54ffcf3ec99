"""jupyter-remote: run notebook cells on a pool of remote Docker hosts."""

from jupyter_remote._version import __version__

__all__ = ["__version__"]
