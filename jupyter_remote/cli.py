"""The `jupyter-remote` command and its sub-commands."""

from __future__ import annotations

import sys

import requests
from traitlets.config import Application

from jupyter_remote import __version__
from jupyter_remote.agent.app import AgentApp
from jupyter_remote.agent.join import JoinRefused, check_join_token
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
        if isinstance(self.subapp, AgentApp):
            self._check_join(self.subapp)
        self.subapp.start()

    def _check_join(self, agent: AgentApp) -> None:
        """`agent --join`: a refused token fails here, before anything starts or detaches."""
        if not (agent.join and agent.join_token):
            return  # nothing to join, or AgentApp says what is missing
        try:
            check_join_token(agent.join, agent.join_token)
        except JoinRefused as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(2)
        except requests.RequestException as exc:
            print(
                f"warning: cannot reach {agent.join} now ({type(exc).__name__}); "
                "the agent starts and keeps trying to join",
                file=sys.stderr,
            )


def main() -> None:
    JupyterRemoteApp.launch_instance()


if __name__ == "__main__":
    main()
