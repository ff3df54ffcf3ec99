"""A stopping agent answers what is in flight: no 500s when SIGTERM ends its event loop."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import psutil
import pytest
import requests

pytestmark = pytest.mark.docker


def test_sigterm_answers_long_polls_and_ends_streams_with_their_exit(make_agent):
    agent = make_agent(extra=("--warm-pool-size", "0"))
    headers = {"Authorization": f"Bearer {agent.token}"}
    answers: dict[str, object] = {}

    # the long poll is connected and sent from this thread, and accepted by the agent,
    # before the stop: a thread left to connect by itself could come after the listener
    # closed (a CI failure: connection refused)
    conn = socket.create_connection((agent.host, agent.port), timeout=60)
    conn.sendall(
        f"GET /v1/jobs?since=0&wait=30 HTTP/1.1\r\nHost: {agent.host}\r\n"
        f"Authorization: Bearer {agent.token}\r\nConnection: close\r\n\r\n".encode()
    )
    mine = conn.getsockname()[1]
    deadline = time.monotonic() + 10
    while not any(
        c.raddr and c.raddr.port == mine for c in psutil.Process(agent.proc.pid).net_connections()
    ):
        assert time.monotonic() < deadline, "the agent never accepted the long poll"
        time.sleep(0.02)

    def long_poll() -> None:
        raw = b"".join(iter(lambda: conn.recv(65536), b""))
        head, _, body = raw.partition(b"\r\n\r\n")
        answers["poll"] = (int(head.split()[1]), json.loads(body))

    poller = threading.Thread(target=long_poll)
    poller.start()
    stream = requests.post(
        agent.url + "/v1/executions",
        json={"execution_id": f"stop-{agent.node_id}", "command": "echo up; sleep 60"},
        headers=headers,
        stream=True,
        timeout=60,
    )
    lines = stream.iter_lines()
    events = []
    for line in lines:
        events.append(json.loads(line))
        if events[-1].get("data") == "up\n":
            break
    started = time.monotonic()
    agent.stop()  # SIGTERM, then wait for the process
    events += [json.loads(line) for line in lines if line]
    poller.join(30)

    assert time.monotonic() - started < 20
    assert events[-1]["event"] == "exit", events
    assert events[-1]["status"] == "cancelled" and "agent stopped" in events[-1]["message"]
    status, body = answers["poll"]
    assert status == 200 and body["jobs"] == [], answers
    log = open(os.path.join(agent.data_dir, "test-agent.log")).read()
    assert " 500 " not in log, [ln for ln in log.splitlines() if " 500 " in ln]
