"""A whole jupyter-remote stack for magics, kernels and notebooks: agents + a real server."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from processes import AgentProcess
from server_process import ServerProcess


class Stack:
    """Two agents on 127.0.0.10-11 and a `jupyter server` with the extension, both real."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="jr-stack-"))
        self.agents = []
        for i in (10, 11):
            data = self.tmp / f"agent{i}"
            data.mkdir()
            self.agents.append(AgentProcess(str(data), host=f"127.0.0.{i}"))
        self.server: ServerProcess | None = None

    def start(self) -> Stack:
        for agent in self.agents:
            agent.start()
        self.server = ServerProcess(self.tmp, self.agents).start()
        return self

    @property
    def env(self) -> dict[str, str]:
        """What a kernel needs to find the server (what the server gives its own kernels)."""
        return {
            "JUPYTER_REMOTE_SERVER_URL": f"http://127.0.0.1:{self.server.port}",
            "JUPYTER_REMOTE_SERVER_TOKEN": self.server.token,
        }

    def export(self) -> None:
        os.environ.update(self.env)

    def stop(self) -> None:
        if self.server:
            self.server.stop()
        for agent in self.agents:
            agent.stop()
