"""Fixtures: a real Docker engine and real agent processes on loopback addresses."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid

import docker
import pytest

from jupyter_remote.agent.client import AgentClient
from processes import BUSYBOX, PYTHON, RUN_ID, AgentProcess, free_port

__all__ = [
    "BUSYBOX",
    "PYTHON",
    "AgentProcess",
    "exported_stack",
    "free_port",
    "new_id",
    "output",
    "remote_shell",
    "remove_containers",
    "run",
]


def remove_containers(containers) -> None:
    """Remove test containers; ones removed meanwhile (an agent's sweep, or its removal of a
    fresh container after the exit, still under way) are fine."""
    for c in containers:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: "removal ... is already in progress"
                raise


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
    managed = client.containers.list(
        all=True, filters={"label": "jupyter-remote.managed=1"}, ignore_removed=True
    )  # others (agents, other runs) remove containers at the same time
    ours = f"pytest-{RUN_ID}"  # a node's containers, and probes of an agent killed mid-probe
    remove_containers(
        c
        for c in managed
        if c.labels.get("jupyter-remote.node", c.labels.get("jupyter-remote.probe", "")).startswith(
            ours
        )
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
        remove_containers(agent.containers(docker_client))


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


def exported_stack(docker_client):
    """A whole stack (two agents, a real server) for a module, its address exported as a
    kernel the server started would have it; stopped and cleaned up after (a generator for
    a module fixture: `yield from exported_stack(docker_client)`)."""
    from stack import Stack

    running = Stack().start()
    saved = {k: os.environ.get(k) for k in running.env}
    running.export()
    try:
        yield running
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        running.stop()
        for agent in running.agents:
            remove_containers(agent.containers(docker_client))


def ipython_shell():
    """The one in-process IPython shell of the test run (started on first use)."""
    from IPython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    start_ipython()
    return get_ipython()


def remote_shell():
    """The shared shell with jupyter_remote loaded afresh: the magics (and their client)
    of an earlier module would still point at that module's server, long stopped."""
    shell = ipython_shell()
    shell.run_line_magic("reload_ext", "jupyter_remote")
    # these shells' tests read a cell's own stdout; the footer has its own tests
    shell.magics_manager.registry["RemoteMagics"].footer = False
    return shell


# -- a 500 anywhere is a bug, even in a test that passed -----------------------------------
SERVER_500 = re.compile(r"\b500 (GET|POST|PUT|PATCH|DELETE|HEAD) \S+")


class Http500Recorder(logging.Handler):
    """Remembers every 500 the in-process Jupyter servers log (jupyter_server's request log)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call is not ours to judge here
            return
        if SERVER_500.search(message):
            self.seen.append(message)


HTTP_500S = Http500Recorder()


def pytest_configure(config) -> None:
    logging.getLogger().addHandler(HTTP_500S)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fail the run on any 500 an agent (its log under the base temp dir) or a server
    answered, naming each: such bugs hide in tests that only check what they asked for."""
    found = list(HTTP_500S.seen)
    factory = getattr(session.config, "_tmp_path_factory", None)
    base = factory.getbasetemp() if factory else None
    if base and base.exists():
        for log in base.rglob("*.log"):
            with open(log, errors="replace") as fh:
                found += [f"{log}: {ln.strip()}" for ln in fh if SERVER_500.search(ln)]
    if found:
        print("\nHTTP 500 answered during the run (a 5xx is a bug):")
        for line in found[:50]:
            print("  " + line)
        session.exitstatus = 1


def run_then_stop(client, sig: str, **body) -> tuple[list[dict], dict, float]:
    """Start an execution, stop it with `sig` once it printed "ready": (events, the
    execution's model, seconds from the cancel to its exit)."""
    eid = new_id()
    events: list[dict] = []
    ready = threading.Event()

    def read():
        for event in client.execute_stream(eid, timeout=120, **body):
            events.append(event)
            if "ready" in event.get("data", ""):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(30), events
    t0 = time.monotonic()
    model = client.cancel(eid, signal=sig)
    reader.join(30)
    assert not reader.is_alive() and events[-1]["event"] == "exit", events
    return events, model, time.monotonic() - t0
