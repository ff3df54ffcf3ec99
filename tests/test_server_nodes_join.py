"""`jupyter-remote agent --join`: a refused token fails at start; a removal sticks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from processes import free_port
from server_process import ServerProcess

JOIN_TOKEN = "join-me"


@pytest.fixture
def server(tmp_path):
    process = ServerProcess(tmp_path, [], join_token=JOIN_TOKEN).start()
    process.join_url = f"http://127.0.0.1:{process.port}"
    yield process
    process.stop()


def agent_argv(data_dir, host: str, *extra: str) -> list[str]:
    port = free_port(host)
    return [
        sys.executable,
        "-m",
        "jupyter_remote",
        "agent",
        "--listen",
        f"{host}:{port}",
        "--data-dir",
        str(data_dir),
        "--token",
        "t0ken",
        *extra,
    ]


def test_a_wrong_join_token_fails_at_start_with_a_clear_message(server, tmp_path):
    data_dir = tmp_path / "agent"
    argv = agent_argv(data_dir, "127.0.0.41", "--daemon", "--join", server.join_url)
    try:
        done = subprocess.run(
            [*argv, "--join-token", "not-it"], capture_output=True, text=True, timeout=60
        )
    finally:  # a daemon that started by mistake must not outlive the test
        pid_file = data_dir / "agent.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "agent started" not in done.stdout
    assert "refused the join (401)" in done.stderr and "join token" in done.stderr
    assert server.get("nodes")["nodes"] == []


def test_no_jupyter_remote_at_the_url_fails_at_start(tmp_path):
    from http.server import HTTPServer, SimpleHTTPRequestHandler
    from threading import Thread

    web = HTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)  # answers 404
    Thread(target=web.serve_forever, daemon=True).start()
    try:
        argv = agent_argv(tmp_path / "agent", "127.0.0.42", "--join")
        url = f"http://127.0.0.1:{web.server_port}"
        done = subprocess.run(
            [*argv, url, "--join-token", "x"], capture_output=True, text=True, timeout=60
        )
    finally:
        web.shutdown()
    assert done.returncode == 2 and "no jupyter-remote server extension there" in done.stderr


def test_an_unreachable_server_is_retried_and_the_agent_serves(tmp_path, make_agent):
    closed = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    agent = make_agent(host="127.0.0.43", extra=("--join", closed, "--join-token", "x"))
    log = os.path.join(agent.data_dir, "test-agent.log")

    def tries() -> int:
        with open(log) as fh:
            return fh.read().count("trying again in")

    deadline = time.monotonic() + 20
    while tries() < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tries() >= 2 and agent.proc.poll() is None
    assert agent.client.health()["node_id"] == agent.node_id


def test_a_removed_node_stays_removed_until_its_agent_restarts(server, make_agent, monkeypatch):
    monkeypatch.setenv("JUPYTER_REMOTE_AGENT_REJOIN_EVERY", "0.3")
    agent = make_agent(
        host="127.0.0.44", extra=("--join", server.join_url, "--join-token", JOIN_TOKEN)
    )

    def listed() -> list[str]:
        return [n["node_id"] for n in server.get("nodes")["nodes"]]

    server.wait_for(lambda: listed() == [agent.node_id], 30)
    server.delete("nodes", agent.node_id)
    time.sleep(3.0)  # ten re-join periods
    assert listed() == []
    with open(os.path.join(agent.data_dir, "test-agent.log")) as fh:
        log = fh.read()
    assert log.count("not joining again until restarted") == 1, log
    assert agent.proc.poll() is None  # it still serves; it only stopped re-joining

    agent.stop()
    agent.start()  # a new process: a new instance, which may join
    server.wait_for(lambda: listed() == [agent.node_id], 30)
    time.sleep(1.0)  # and its re-joins are accepted
    assert listed() == [agent.node_id]
