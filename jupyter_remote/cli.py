"""The `jupyter-remote` command and its sub-commands."""

from __future__ import annotations

import sys

from traitlets.config import Application

from jupyter_remote._version import __version__

EXTRAS = {"swarm": "agent"}  # the extra a sub-command needs, where it has no extra of its own


class JupyterRemoteApp(Application):
    name = "jupyter-remote"
    version = __version__
    description = "jupyter-remote: run notebook cells on a pool of remote Docker hosts."
    # Named, not imported: a gateway host has no Docker client and an agent host no gateway
    # needs, so each sub-command imports only what it uses (the `[agent]`/`[gateway]` extras).
    subcommands = {
        "agent": ("jupyter_remote.agent.app.AgentApp", "Run the executor agent on this host."),
        "gateway": (
            "jupyter_remote.gateway.app.GatewayApp",
            "Receive inference-engine states over UDP and log them.",
        ),
        "swarm": (
            "jupyter_remote.swarm.app.SwarmApp",
            "Run the agents as a global service of a Docker Swarm (deploy, remove).",
        ),
    }

    def initialize_subcommand(self, subc: str, argv=None) -> None:
        try:
            super().initialize_subcommand(subc, argv)
        except ModuleNotFoundError as exc:
            print(
                f"error: `jupyter-remote {subc}` needs module {exc.name!r}, which this install "
                f"lacks; install it with: pip install 'jupyter-remote[{EXTRAS.get(subc, subc)}]'",
                file=sys.stderr,
            )
            self.exit(2)

    def start(self) -> None:
        if self.subapp is None:
            self.print_help()
            self.exit(2)
        if getattr(self.subapp, "join_token", None):
            self._check_join(self.subapp)
        self.subapp.start()

    def _check_join(self, agent) -> None:
        """`agent --join`: a refused token fails here, before anything starts or detaches."""
        if not agent.join:
            return  # nothing to join, or AgentApp says what is missing
        import requests

        from jupyter_remote.agent.join import JoinRefused, check_join_token

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
