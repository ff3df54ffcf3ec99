"""The jupyter-remote server extension: the hub between kernels, the Lab panel and agents."""

from __future__ import annotations

from jupyter_remote.extras import require_extra


def _jupyter_server_extension_points() -> list[dict]:
    require_extra("jupyter", "The jupyter-remote server extension")
    from jupyter_remote_server.app import RemoteApp

    return [{"module": "jupyter_remote_server", "app": RemoteApp}]
