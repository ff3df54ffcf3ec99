"""A real Jupyter server, and a real agent, out of open files: waiting connections get a
clear 503 (JSON, reason too_many_open_files), the accept loop does not spin or log a
traceback per turn, and each answers normally once descriptors are free again."""

from __future__ import annotations

import json
import resource
import socket
import time
from pathlib import Path

import psutil
import requests

from server_process import ServerProcess


def _request(port: int, path: str, auth: str) -> bytes:
    """One raw GET: the answer's bytes (b"" when the server closes without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: {auth}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def take_descriptors(proc: psutil.Process, port: int, upto: int) -> list[socket.socket]:
    """Idle connections that take the process's descriptors one by one, up to `upto`."""
    held: list[socket.socket] = []
    for _ in range(60):
        if proc.num_fds() >= upto:
            break
        before = proc.num_fds()
        held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        deadline = time.monotonic() + 10
        while proc.num_fds() == before and time.monotonic() < deadline:
            time.sleep(0.02)
    assert proc.num_fds() >= upto, (proc.num_fds(), upto)
    return held


def exhaust_and_check(pid: int, port: int, path: str, auth: str, log) -> None:
    """Take the process's descriptors with idle connections, check the 503 and that the
    loop does not spin, then free them and check that it answers again; no traceback."""
    held: list[socket.socket] = []
    try:
        proc = psutil.Process(pid)
        hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
        assert resource.prlimit(pid, resource.RLIMIT_NOFILE)[0] == hard  # raised at start
        limit = proc.num_fds() + 30
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
        held += take_descriptors(proc, port, limit)
        answer = _request(port, path, auth)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:200]
        error = json.loads(body)
        assert error["reason"] == "too_many_open_files" and f"limit {limit}" in error["message"]

        cpu_before = proc.cpu_times()
        time.sleep(2)  # connections still waiting: the loop must not spin meanwhile
        cpu_after = proc.cpu_times()
        busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        assert busy < 1.0, f"{busy:.2f} s of CPU in 2 s while out of files"
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 15
    while not _request(port, path, auth).startswith(b"HTTP/1.1 200"):
        assert time.monotonic() < deadline, "no 200 after the descriptors were freed"
        time.sleep(0.2)
    text = log.read_text()
    assert "Exception in callback" not in text, text[-3000:]  # the accept loop's storm
    assert text.count("Traceback") == 0, text[-3000:]
    assert "out of open files" in text and "too_many_open_files" in text


def test_a_server_out_of_open_files_refuses_with_a_503_and_recovers(tmp_path):
    server = ServerProcess(tmp_path, [])
    server.start()
    try:
        auth = f"token {server.token}"
        exhaust_and_check(server.proc.pid, server.port, "/remote/api/status", auth, server.log)
    finally:
        server.stop()


def test_an_agent_out_of_open_files_refuses_with_a_503_and_recovers(make_agent):
    agent = make_agent()
    exhaust_and_check(
        agent.proc.pid,
        agent.port,
        "/v1/health",
        f"Bearer {agent.token}",
        Path(agent.data_dir) / "test-agent.log",
    )


def test_the_limit_is_raised_at_start_as_configured(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4096)
    server = ServerProcess(tmp_path, [], open_files_limit=want)
    server.start()
    try:
        assert resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)[0] == max(soft, want)
        assert requests.get(f"{server.url}/status", timeout=10).status_code in (200, 403)
    finally:
        server.stop()


def test_a_cell_the_server_cannot_send_for_want_of_a_descriptor_is_a_503(tmp_path, make_agent):
    """One descriptor left: the cell's request is accepted, its connection to the node
    cannot be opened; the answer is the 503 itself, not a stream that ends 'unknown'."""
    agent = make_agent(extra=("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100"))
    server = ServerProcess(tmp_path, [agent])
    server.start()
    held: list[socket.socket] = []
    try:
        proc = psutil.Process(server.proc.pid)
        hard = resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)[1]
        limit = proc.num_fds() + 20
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (limit, hard))
        held = take_descriptors(proc, server.port, limit - 1)
        resp = requests.post(
            f"{server.url}/executions",
            json={"command": "echo should-not-run", "fresh": True},
            headers={"Authorization": f"token {server.token}"},
            timeout=30,
        )
        assert resp.status_code == 503, resp.text[:500]
        assert resp.json()["reason"] == "too_many_open_files"
    finally:
        for conn in held:
            conn.close()
    try:
        assert server.get("executions")["executions"] == []  # nothing kept
    finally:
        server.stop()
