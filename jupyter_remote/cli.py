"""The `jupyter-remote` command and its sub-commands."""

from __future__ import annotations

from traitlets.config import Application

from jupyter_remote import __version__
from jupyter_remote.agent.app import AgentApp
from jupyter_remote.gateway.app import GatewayApp


class JupyterRemoteApp(Application):
    name = "jupyter-remote"
    version = __version__
    description = "jupyter-remote: run notebook cells on a pool of remote Docker hosts."
    subcommands = {
        "agent": (AgentApp, "Run the executor agent on this host."),
        "gateway": (GatewayApp, "Receive inference-engine states over UDP and log them."),
    }

    def start(self) -> None:
        if self.subapp is None:
            self.print_help()
            self.exit(2)
        self.subapp.start()


def main() -> None:
    JupyterRemoteApp.launch_instance()


if __name__ == "__main__":
    main()
