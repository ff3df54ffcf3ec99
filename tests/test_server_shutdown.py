"""Stopping JupyterLab as `scripts/run.sh` starts it: the sessions of its kernels go with it.

The server stops its extensions before it shuts its kernels down, so the sessions must be
removed at the extension's stop, while the agent can still be reached; nothing may be left
running and nothing may print a traceback.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import time

import pytest
import requests
from jupyter_client import BlockingKernelClient

from conftest import BUSYBOX, free_port, remove_containers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "shutdown-test-token"
AGENT_PORT = 9527  # scripts/run.sh's agent


class RunScript:
    """`scripts/run.sh` in a home, data directory and port of its own."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port("127.0.0.1")
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.data_dir = tmp_path / "agent"
        self.log = tmp_path / "run.log"
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"token {TOKEN}"}
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        self.env = {
            **env,
            "HOME": str(self.home),
            "JUPYTER_PORT": str(self.port),
            "JUPYTER_TOKEN": TOKEN,
            "JUPYTER_REMOTE_AGENT_DATA_DIR": str(self.data_dir),
        }
        self.proc: subprocess.Popen | None = None
        self.pty: int | None = None

    def start(self, terminal: bool = False) -> RunScript:
        """With `terminal`, its stdin is a terminal (a pty), as when a person runs it."""
        stdin = subprocess.DEVNULL
        if terminal:
            self.pty, stdin = pty.openpty()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [os.path.join(ROOT, "scripts", "run.sh")],
                env=self.env,
                stdin=stdin,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if terminal:
            os.close(stdin)
        deadline = time.monotonic() + 180  # setup.sh checks everything first
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                status = requests.get(
                    f"{self.base}/remote/api/status", headers=self.headers, timeout=5
                )
                if status.ok and status.json()["healthy"] + status.json()["busy"] >= 1:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise AssertionError(f"run.sh did not serve within 180 s:\n{self.log.read_text()}")

    def kernel(self) -> tuple[str, BlockingKernelClient]:
        kernel_id = requests.post(
            f"{self.base}/api/kernels", json={"name": "python3"}, headers=self.headers, timeout=60
        ).json()["id"]
        runtime = self.home / ".local" / "share" / "jupyter" / "runtime"
        client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel_id}.json"))
        client.load_connection_file()
        client.start_channels(hb=False)
        client.wait_for_ready(timeout=60)
        return kernel_id, client

    def stop_agent(self) -> None:
        """Stop the agent if run.sh started it (one that listened already is not ours)."""
        if (self.data_dir / "agent.pid").exists():
            subprocess.run(
                [os.path.join(ROOT, ".venv", "bin", "jupyter-remote"), "agent", "stop"],
                env=self.env,
                capture_output=True,
                timeout=60,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if self.pty is not None:
            os.close(self.pty)


def run(client: BlockingKernelClient, code: str) -> str:
    """Execute; the cell's stream text and errors."""
    seen: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            seen.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            seen.append("\n".join(msg["content"]["traceback"]))

    client.execute_interactive(code, timeout=120, output_hook=hook)
    return "".join(seen)


def kernel_containers(docker_client, kernel_ids: list[str]) -> list:
    found = docker_client.containers.list(
        all=True, filters={"label": "jupyter-remote.session"}, ignore_removed=True
    )
    return [
        c
        for c in found
        if any(c.labels["jupyter-remote.session"].startswith(f"k-{k}-") for k in kernel_ids)
    ]


@pytest.mark.parametrize(
    "signals, terminal",
    [
        (["SIGTERM"], False),
        (["SIGINT", "SIGINT"], True),  # Ctrl-C asks for a confirmation, Ctrl-C again stops
        (["SIGINT"], False),  # no terminal (a service, docker run without -t)
    ],
    ids=["sigterm", "ctrl-c-twice-in-a-terminal", "sigint-without-a-terminal"],
)
def test_stopping_the_server_removes_the_sessions_of_its_kernels(
    docker_client, tmp_path, signals, terminal
):
    server = RunScript(tmp_path).start(terminal)
    kernel_ids = []
    try:
        for last in (False, True):
            kernel_id, client = server.kernel()
            kernel_ids.append(kernel_id)
            run(client, "%load_ext jupyter_remote")
            for image in (BUSYBOX, "jupyter-remote/python:local"):
                text = run(client, f"%%remote --image {image}\necho ran-on-{image}")
                assert f"ran-on-{image}" in text, text
            if last:  # the second kernel is inside a cell when the server stops
                client.execute("%%remote --image jupyter-remote/python:local\nsleep 60")
                time.sleep(2)
            # closed now: a client left to the garbage collector blocks it on its sockets
            client.stop_channels()
        assert len(kernel_containers(docker_client, kernel_ids)) == 4

        for name in signals:
            server.proc.send_signal(getattr(signal, name))
            time.sleep(1)
        assert server.proc.wait(60) == 0
        log = server.log.read_text()
        assert kernel_containers(docker_client, kernel_ids) == [], log
        assert "removed 4 session container(s) of 2 kernel(s) at stop" in log, log
        assert "Shutting down 2 kernels" in log, log
        assert "Traceback" not in log and "Error" not in log, log
    finally:
        server.kill()
        remove_containers(kernel_containers(docker_client, kernel_ids))
        server.stop_agent()
