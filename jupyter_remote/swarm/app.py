"""`jupyter-remote swarm deploy|remove`: the agents as a global service of a Docker Swarm.

Run against a manager's Docker API (--docker-host, else DOCKER_HOST, else the local
socket). Bad input is one line and exit 2, before anything is made; the engine refusing
is one line and exit 1.
"""

from __future__ import annotations

import os
import sys

from traitlets import Int, List, Unicode, default
from traitlets.config import Application

from jupyter_remote._version import __version__
from jupyter_remote.swarm.spec import (
    LABEL,
    AgentService,
    BadSetting,
    check_service,
    secret_name,
    service_spec,
)

LOCAL_SOCKET = "unix:///var/run/docker.sock"


class Failed(Exception):
    """The engine refused or could not be reached: one line, exit 1."""


class SwarmCommand(Application):
    """What deploy and remove share: the manager to talk to and the service's name."""

    version = __version__
    docker_host = Unicode(
        help="Docker API URL of a swarm manager (default: DOCKER_HOST, else the local socket).",
        config=True,
    )
    service = Unicode(
        "jupyter-remote-agent",
        help="The agents' service; its token's secret is SERVICE-token.",
        config=True,
    )

    @default("docker_host")
    def _d_docker_host(self) -> str:
        return os.environ.get("DOCKER_HOST") or LOCAL_SOCKET

    def start(self) -> None:
        try:
            self.run()
        except BadSetting as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(2)
        except Failed as exc:
            print(f"error: {exc}", file=sys.stderr)
            self.exit(1)

    def run(self) -> None:
        raise NotImplementedError

    def manager(self):
        """docker-py's client of the manager; Failed unless it is a swarm manager."""
        try:
            import docker
        except ModuleNotFoundError:
            raise Failed(
                "`jupyter-remote swarm` needs docker-py; install it with: "
                "pip install 'jupyter-remote[agent]'"
            ) from None
        try:
            # TLS as the docker CLI: DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
            tls = docker.utils.kwargs_from_env().get("tls", False)
            client = docker.DockerClient(base_url=self.docker_host, timeout=60, tls=tls)
            swarm = client.info().get("Swarm") or {}
        except docker.errors.DockerException as exc:
            raise Failed(f"cannot reach the Docker engine at {self.docker_host}: {exc}") from None
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise Failed(
                f"the engine at {self.docker_host} is not a swarm manager (swarm state "
                f"{swarm.get('LocalNodeState') or 'inactive'}); give a manager's API with "
                "--docker-host"
            )
        return client


class SwarmDeployApp(SwarmCommand):
    name = "jupyter-remote swarm deploy"
    description = (
        "Run the agent on every node of a swarm: the token becomes the Swarm secret "
        "SERVICE-token, and the agents a global service (host network, the Docker socket "
        "and the data dir mounted, restarted by Swarm, upgraded one node at a time). "
        "Run again with a new --image to upgrade."
    )
    image = Unicode(help="The agent's image (deploy/swarm/Dockerfile), on every node.", config=True)
    token_file = Unicode(help="File holding the agents' token (first line).", config=True)
    port = Int(9527, help="The port every agent listens on (host network).", config=True)
    data_dir = Unicode(
        "/var/lib/jupyter-remote",
        help="The agent's data dir on each node (mounted at the same path; it must exist on "
        "every node; {{.Node.Hostname}} in it is the node's name).",
        config=True,
    )
    constraint = List(
        Unicode(),
        help="Only nodes matching this, e.g. node.labels.gpu==yes (repeatable).",
        config=True,
    )
    aliases = {
        "docker-host": "SwarmDeployApp.docker_host",
        "image": "SwarmDeployApp.image",
        "token-file": "SwarmDeployApp.token_file",
        "port": "SwarmDeployApp.port",
        "data-dir": "SwarmDeployApp.data_dir",
        "service": "SwarmDeployApp.service",
        "constraint": "SwarmDeployApp.constraint",
    }

    def settings(self) -> AgentService:
        """The checked settings (BadSetting: nothing was made)."""
        if not self.image:
            raise BadSetting("--image is required (the agent's image, on every node)")
        if not self.token_file:
            raise BadSetting(
                "--token-file is required (the agents' token; the server's "
                "c.RemoteApp.swarm_token_file holds the same)"
            )
        try:
            with open(self.token_file) as fh:
                token = fh.readline().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise BadSetting(f"cannot read --token-file {self.token_file}: {why}") from None
        return AgentService(
            image=self.image,
            token=token,
            port=self.port,
            data_dir=self.data_dir,
            service=self.service,
            constraints=tuple(self.constraint),
        )

    def run(self) -> None:
        agent = self.settings()
        client = self.manager()
        from docker.errors import APIError, NotFound

        try:
            secret, made = self._secret(client, agent)
            try:
                service = client.services.get(agent.service)
            except NotFound:
                service = None
            spec = service_spec(agent, secret.id)
            if service is None:
                service = client.services.create(**spec)
                did = "created"
            else:
                spec.pop("name")
                service.update(**spec)  # Swarm rolls it: one node at a time, old agent first
                did = "updated (rolling, one node at a time)"
        except APIError as exc:
            raise Failed(f"the swarm refused: {exc.explanation or exc}") from None
        kept = "made" if made else "kept (exists; a secret's value never changes)"
        print(f"secret {agent.secret}: {kept}")
        print(
            f"service {agent.service} ({service.id[:12]}): {did}: global, {agent.image}, "
            f"port {agent.port}, data dir {agent.data_dir}"
        )
        print(
            f"point the server at it: c.RemoteApp.swarm_url = {self.docker_host!r}, "
            f"c.RemoteApp.swarm_token_file = {self.token_file!r}"
            + (f", c.RemoteApp.swarm_agent_port = {agent.port}" if agent.port != 9527 else "")
            + (
                f", c.RemoteApp.swarm_service = {agent.service!r}"
                if agent.service != "jupyter-remote-agent"
                else ""
            )
        )

    @staticmethod
    def _secret(client, agent: AgentService):
        """The token's secret: (secret, made now). An existing one is kept: Swarm never
        shows a secret's value, and a service's secret cannot change under it."""
        found = client.secrets.list(filters={"name": agent.secret})
        for secret in found:
            if secret.name == agent.secret:
                return secret, False
        made = client.secrets.create(
            name=agent.secret, data=agent.token.encode(), labels={LABEL: "agent-token"}
        )
        return client.secrets.get(made.id), True


class SwarmRemoveApp(SwarmCommand):
    name = "jupyter-remote swarm remove"
    description = (
        "Remove the agents' service and its token secret. The agents stop (Swarm stops "
        "their containers); the sessions and jobs they started are plain containers and "
        "stay (remove them with `jupyter-remote agent cleanup` on each node)."
    )
    aliases = {
        "docker-host": "SwarmRemoveApp.docker_host",
        "service": "SwarmRemoveApp.service",
    }

    def run(self) -> None:
        check_service(self.service)
        client = self.manager()
        from docker.errors import APIError, NotFound

        removed = []
        try:
            try:
                client.services.get(self.service).remove()
                removed.append(f"service {self.service}")
            except NotFound:
                pass
            name = secret_name(self.service)
            for secret in client.secrets.list(filters={"name": name}):
                if secret.name == name:
                    secret.remove()
                    removed.append(f"secret {name}")
        except APIError as exc:
            raise Failed(f"the swarm refused: {exc.explanation or exc}") from None
        print(f"removed: {', '.join(removed)}" if removed else "nothing to remove")


class SwarmApp(Application):
    name = "jupyter-remote swarm"
    version = __version__
    description = "The agents as a global service of a Docker Swarm."
    subcommands = {
        "deploy": (SwarmDeployApp, SwarmDeployApp.description.split(":")[0] + "."),
        "remove": (SwarmRemoveApp, "Remove the agents' service and its token secret."),
    }

    def start(self) -> None:
        if self.subapp is None:
            self.print_subcommands()
            self.exit(2)
        self.subapp.start()
