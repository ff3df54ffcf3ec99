"""A real `jupyter server` process with nodes: its log, and how fast it stops on SIGTERM."""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from conftest import BUSYBOX
from server_process import ServerProcess


@pytest.fixture
def server(tmp_path, make_agent):
    agents = [make_agent(host=f"127.0.0.{i}") for i in (31, 32)]
    process = ServerProcess(tmp_path, agents).start()
    process.agents = agents
    yield process
    process.stop()


def test_the_server_log_shows_node_state_changes(server):
    log = server.log.read_text()
    for agent in server.agents:
        lines = [line for line in log.splitlines() if f"node {agent.node_id}: " in line]
        assert lines, log
        # busy, if the machine's CPU is pinned by other tests at that moment
        assert re.search(r"unknown -> (healthy|busy)", lines[0]), lines
        assert lines[0].startswith("[I ") and "jupyter_remote_server]" in lines[0], lines


def test_sigterm_stops_a_server_with_nodes_and_a_running_cell_promptly(server):
    """Blocking calls to agents (the job feeds' long polls, a cell's stream) are abandoned."""
    execution_id = f"x-{uuid.uuid4().hex[:10]}"
    answer: list = []

    def run() -> None:
        try:
            answer.append(
                requests.post(
                    f"{server.url}/executions",
                    json={"execution_id": execution_id, "image": BUSYBOX, "command": "sleep 60"},
                    headers={"Authorization": f"token {server.token}"},
                    timeout=90,
                ).status_code
            )
        except requests.RequestException as exc:
            answer.append(exc)

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    server.wait_for(lambda: server.get("executions", execution_id)["status"] == "running", 30)
    time.sleep(1.0)  # the job feeds are inside their long polls now
    t0 = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(30)
    took = time.monotonic() - t0
    assert server.proc.returncode == 0, server.log.read_text()[-2000:]
    assert took < 3.0, f"stopping took {took:.1f} s"  # a safety bound: it takes ~0.5 s
    caller.join(10)
    assert not caller.is_alive()


def test_calls_to_agents_take_no_threads_in_the_server(server):
    """Polls, job feeds and a cell's stream run on the event loop (the server's agent
    client): no request thread, and the thread count does not grow with the streams."""
    execution_id = f"x-{uuid.uuid4().hex[:10]}"
    caller = threading.Thread(
        target=requests.post,
        args=(f"{server.url}/executions",),
        kwargs={
            "json": {"execution_id": execution_id, "image": BUSYBOX, "command": "sleep 5"},
            "headers": {"Authorization": f"token {server.token}"},
            "timeout": 60,
        },
        daemon=True,
    )
    caller.start()
    server.wait_for(lambda: server.get("executions", execution_id)["status"] == "running", 30)
    tasks = Path(f"/proc/{server.proc.pid}/task")
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir()]
    assert not [n for n in names if n.startswith("remote-")], names
    caller.join(30)
