"""The jupyter-remote ExtensionApp; the executor pool and node registry arrive in issue 3."""

from __future__ import annotations

from jupyter_server.extension.application import ExtensionApp


class RemoteApp(ExtensionApp):
    """Registers jupyter-remote in a Jupyter server."""

    name = "jupyter_remote_server"
