"""jupyter-remote: run notebook cells on a pool of remote Docker hosts."""

from jupyter_remote._version import __version__


def load_ipython_extension(ipython) -> None:
    """`%load_ext jupyter_remote`: register %%remote and the %remote_* magics."""
    from jupyter_remote.extras import require_extra

    require_extra("jupyter", "%load_ext jupyter_remote")
    from jupyter_remote.kernel.magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str):
    if name in ("RemoteDockerEnvironment", "RemoteEnvironment"):
        from jupyter_remote.kernel import api

        return getattr(api, name)
    if name == "RemoteClient":
        from jupyter_remote.kernel.client import RemoteClient

        return RemoteClient
    raise AttributeError(name)


__all__ = ["RemoteClient", "RemoteDockerEnvironment", "RemoteEnvironment", "__version__"]
