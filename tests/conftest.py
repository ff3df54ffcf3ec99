"""Fixtures: a real Docker engine and real agent processes on loopback addresses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import docker
import pytest
import requests

from jupyter_remote.agent_client import AgentClient

BUSYBOX = "jupyter-remote/busybox:local"
PYTHON = "jupyter-remote/python:local"
RUN_ID = uuid.uuid4().hex[:6]


def _need_docker() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
        for image in (BUSYBOX, PYTHON):
            client.images.get(image)
        return client
    except docker.errors.DockerException as exc:
        message = (
            f"no usable Docker engine ({exc}); scripts/setup.sh starts one and builds "
            "the local images"
        )
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def docker_client():
    """The real engine; under CI=true a missing engine fails the test instead of skipping."""
    client = _need_docker()
    yield client
    for c in client.containers.list(all=True, filters={"label": "jupyter-remote.managed=1"}):
        if c.labels.get("jupyter-remote.node", "").startswith(f"pytest-{RUN_ID}"):
            c.remove(force=True)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ChildProcess:
    """A real process of ours that a test can kill -9 or stop."""

    proc: subprocess.Popen | None = None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class AgentProcess(ChildProcess):
    """A real `jupyter-remote agent` process that tests can kill, stop and restart."""

    def __init__(
        self,
        data_dir: str,
        host: str = "127.0.0.1",
        token: str | None = "t0ken",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.token = token
        self.data_dir = data_dir
        self.node_id = f"pytest-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.url = f"http://{host}:{self.port}"
        self.client = AgentClient(self.url, token)

    def argv(self) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "jupyter_remote",
            "agent",
            "--listen",
            f"{self.host}:{self.port}",
            "--data-dir",
            self.data_dir,
            "--node-id",
            self.node_id,
            "--default-image",
            BUSYBOX,
            "--sample-interval",
            "0.5",
            *self.extra,
        ]
        if self.token:
            argv += ["--token", self.token]
        return argv

    def start(self) -> AgentProcess:
        log = open(os.path.join(self.data_dir, "test-agent.log"), "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}; see {log.name}")
            try:
                requests.get(
                    self.url + "/v1", timeout=1, headers={"Authorization": f"Bearer {self.token}"}
                )
                return self
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("agent did not start listening within 30 s")

    def containers(self, docker_client, **labels) -> list:
        wanted = [f"jupyter-remote.node={self.node_id}"]
        wanted += [f"jupyter-remote.{k}={v}" for k, v in labels.items()]
        return docker_client.containers.list(
            all=True, filters={"label": wanted}, ignore_removed=True
        )


@pytest.fixture
def make_agent(docker_client, tmp_path_factory):
    """Start agents of one's own (for kill -9, restarts and special options)."""
    agents: list[AgentProcess] = []

    def make(**kw) -> AgentProcess:
        data_dir = kw.pop("data_dir", None) or str(tmp_path_factory.mktemp("agent"))
        agent = AgentProcess(data_dir, **kw).start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()
        for c in agent.containers(docker_client):
            c.remove(force=True)


@pytest.fixture(scope="session")
def agent(docker_client, tmp_path_factory):
    """One agent shared by the tests that do not stop or restart it."""
    proc = AgentProcess(str(tmp_path_factory.mktemp("shared-agent"))).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(agent) -> AgentClient:
    return agent.client


@pytest.fixture
def session(client):
    """A fresh busybox session, deleted afterwards."""
    sid = f"s-{uuid.uuid4().hex[:8]}"
    client.create_session(session_id=sid, image=BUSYBOX, memory="128m")
    yield sid
    try:
        client.delete_session(sid)
    except Exception:  # noqa: BLE001 - a test may have deleted it already
        pass


def new_id(prefix: str = "e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def run(client: AgentClient, **body) -> tuple[list[dict], dict]:
    """Run one execution to its end: (all events, the exit event)."""
    events = list(client.execute_stream(body.pop("execution_id", None) or new_id(), **body))
    return events, events[-1]


def output(events: list[dict], stream: str = "stdout") -> str:
    return "".join(e["data"] for e in events if e["event"] == stream)
