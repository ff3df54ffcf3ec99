"""The agents' global service: its settings checked, and the service and secret they make.

Pure (no Docker): `deploy.py` sends what `service_spec` builds; the stack file in
deploy/swarm/ says the same, and a test holds the two together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jupyter_remote.protocol.common import IMAGE_PATTERN

AGENT_ENV = "JUPYTER_REMOTE_AGENT_"
SOCKET = "/var/run/docker.sock"
LABEL = "org.jupyter-remote.role"  # on the service and the secret: what made them
NODE_TEMPLATE = "{{.Node.Hostname}}"  # Swarm expands it in env and mounts, not in args
SERVICE_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,56}$"  # room for "-token" in 63
TOKEN_PATTERN = r"^[!-~]{1,1024}$"  # like the agent's: visible ASCII, no spaces
CONSTRAINT_PATTERN = r"^(node|engine)\.[A-Za-z0-9_.\-/]+ *(==|!=) *[^ ]+$"
DATA_DIR_PATTERN = r"^/[A-Za-z0-9_.\-/{}]*$"  # absolute; {{.Node.Hostname}} may be in it


class BadSetting(ValueError):
    """A setting the command refuses: one line for the user, nothing is created."""


@dataclass(frozen=True)
class AgentService:
    """What `jupyter-remote swarm deploy` makes, checked."""

    image: str
    token: str
    port: int = 9527
    data_dir: str = "/var/lib/jupyter-remote"
    service: str = "jupyter-remote-agent"
    constraints: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not re.fullmatch(IMAGE_PATTERN, self.image) or len(self.image) > 255:
            raise BadSetting(
                f"--image must be an image reference like repo/name:tag; got {self.image!r}"
            )
        if not re.fullmatch(TOKEN_PATTERN, self.token):
            raise BadSetting(
                "the token (first line of --token-file) must be 1-1024 visible ASCII "
                "characters, no spaces"
            )
        if not 1 <= self.port <= 65535:
            raise BadSetting(f"--port must be 1-65535; got {self.port}")
        if not re.fullmatch(DATA_DIR_PATTERN, self.data_dir) or "/../" in self.data_dir + "/":
            raise BadSetting(
                f"--data-dir must be an absolute path (letters, digits, . _ - /, and "
                f"{NODE_TEMPLATE}); got {self.data_dir!r}"
            )
        check_service(self.service)
        for constraint in self.constraints:
            if not re.fullmatch(CONSTRAINT_PATTERN, constraint):
                raise BadSetting(
                    "--constraint must be like node.labels.zone==eu-1 or node.role!=manager; "
                    f"got {constraint!r}"
                )

    @property
    def secret(self) -> str:
        return secret_name(self.service)

    def command(self) -> list[str]:
        """The agent's command line (node id and data dir come by env: Swarm expands
        templates there, never in a command's arguments)."""
        return [
            "jupyter-remote",
            "agent",
            "--listen",
            f"0.0.0.0:{self.port}",
            "--token-file",
            f"/run/secrets/{self.secret}",
        ]

    def env(self) -> dict[str, str]:
        return {f"{AGENT_ENV}NODE_ID": NODE_TEMPLATE, f"{AGENT_ENV}DATA_DIR": self.data_dir}

    def mounts(self) -> list[tuple[str, str]]:
        """(host path, container path): the Docker socket, and the data dir at its own path
        (the agent bind-mounts its runner directories into the containers it starts)."""
        return [(SOCKET, SOCKET), (self.data_dir, self.data_dir)]


def check_service(name: str) -> str:
    if not re.fullmatch(SERVICE_PATTERN, name):
        raise BadSetting(
            "--service must be 1-57 letters, digits, _ . - (starting with a letter or digit); "
            f"got {name!r}"
        )
    return name


def secret_name(service: str) -> str:
    return f"{service}-token"


def service_spec(agent: AgentService, secret_id: str) -> dict:
    """docker-py's services.create()/update() keyword arguments for the agents' service.

    Global (one agent per node), host network, restarted by Swarm whatever its exit (the
    agent only: what it starts are plain containers of its engine, never Swarm services, so
    Swarm never restarts our work), upgraded one node at a time, old agent first.
    """
    from docker.types import (
        Mount,
        RestartPolicy,
        SecretReference,
        ServiceMode,
        UpdateConfig,
    )

    return {
        "image": agent.image,
        "name": agent.service,
        "command": agent.command(),
        "env": [f"{k}={v}" for k, v in agent.env().items()],
        "mode": ServiceMode("global"),
        "networks": ["host"],
        "mounts": [Mount(target, source, type="bind") for source, target in agent.mounts()],
        "secrets": [SecretReference(secret_id, agent.secret, mode=0o400)],
        "restart_policy": RestartPolicy(condition="any", delay=2_000_000_000),
        "update_config": UpdateConfig(
            parallelism=1, order="stop-first", failure_action="pause", monitor=10_000_000_000
        ),
        "constraints": list(agent.constraints),
        "labels": {LABEL: "agent"},
        "container_labels": {LABEL: "agent"},
        "stop_grace_period": 30_000_000_000,
    }
