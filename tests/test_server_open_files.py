"""A real Jupyter server out of open files: waiting connections get a clear 503 (JSON,
reason too_many_open_files), the accept loop does not spin or log a traceback per turn,
and the server answers normally once descriptors are free again."""

from __future__ import annotations

import json
import resource
import socket
import time

import psutil
import requests

from server_process import ServerProcess


def _request(port: int, token: str) -> bytes:
    """One raw GET: the answer's bytes (b"" when the server closes without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"GET /remote/api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: token {token}\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_out_of_open_files_refuses_with_a_503_and_recovers(tmp_path):
    server = ServerProcess(tmp_path, [])
    server.start()
    held: list[socket.socket] = []
    try:
        proc = psutil.Process(server.proc.pid)
        hard = resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)[1]
        assert resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE)[0] == hard  # raised
        limit = proc.num_fds() + 30
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (limit, hard))
        # idle keep-alive connections take the server's descriptors one by one, until it
        # has none left
        for _ in range(60):
            if proc.num_fds() >= limit:
                break
            before = proc.num_fds()
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            deadline = time.monotonic() + 10
            while proc.num_fds() == before and time.monotonic() < deadline:
                time.sleep(0.02)
        assert proc.num_fds() >= limit, (proc.num_fds(), limit)
        answer = _request(server.port, server.token)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer[:200]
        error = json.loads(body)
        assert error["reason"] == "too_many_open_files" and f"limit {limit}" in error["message"]

        cpu_before = proc.cpu_times()
        time.sleep(2)  # connections still waiting: the loop must not spin meanwhile
        cpu_after = proc.cpu_times()
        busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        assert busy < 1.0, f"{busy:.2f} s of CPU in 2 s while out of files"

        for conn in held:
            conn.close()
        held.clear()
        server.wait_for(lambda: server.get("status") is not None, 15)
        log = server.log.read_text()
        assert log.count("Traceback") == 0, log[-3000:]
        assert "out of open files" in log and "too_many_open_files" in log
    finally:
        for conn in held:
            conn.close()
        server.stop()


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
