"""Fixtures for the server extension: pytest-jupyter's server with real agents on 127.0.0.x."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest

from processes import FAST, node_config


CALM = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100")


@pytest.fixture
def agents(make_agent):
    """Three real agents on three loopback addresses. Calm: a loaded test machine never
    turns them busy (placement tests count on load by work, not by the machine); tests of
    pressure make agents of their own (test_server_nodes_busy.py)."""
    return [make_agent(host=f"127.0.0.{i}", extra=CALM) for i in (2, 3, 4)]


@pytest.fixture
def remote_config(agents, tmp_path):
    return {"nodes": node_config(agents), "db_path": str(tmp_path / "remote.sqlite"), **FAST}


@pytest.fixture
def jp_server_config(remote_config):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_remote_server": True}},
        "RemoteApp": remote_config,
    }


@pytest.fixture(autouse=True)
def remote_started(jp_serverapp, jp_asyncio_loop):
    """Start the extensions as a running server does after its loop starts (_post_start)."""
    jp_asyncio_loop.run_until_complete(jp_serverapp.extension_manager.start_all_extensions())
    return jp_serverapp


async def api(jp_fetch, *path, method="GET", body=None, **kw):
    """Call /remote/api and decode the JSON answer."""
    if body is not None:
        kw["body"] = json.dumps(body)
    resp = await jp_fetch("remote", "api", *path, method=method, **kw)
    return json.loads(resp.body)


async def execute(jp_fetch, **body) -> list[dict]:
    """Run one execution through the server; all its events."""
    body.setdefault("execution_id", f"x-{uuid.uuid4().hex[:10]}")
    resp = await jp_fetch(
        "remote", "api", "executions", method="POST", body=json.dumps(body), request_timeout=120
    )
    return [json.loads(line) for line in resp.body.splitlines() if line.strip()]


async def until(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Await until predicate() is truthy (it may be async); return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


USABLE = ("healthy", "busy")  # busy: under CPU/memory pressure (a loaded test machine), usable


async def healthy(jp_fetch, count: int = 3):
    """Wait until `count` nodes take work."""

    async def check():
        nodes = (await api(jp_fetch, "nodes"))["nodes"]
        return nodes if sum(n["state"] in USABLE for n in nodes) >= count else None

    return await until(check)


class CuttableProxy:
    """A loopback TCP proxy that a test can cut, to break a stream mid-way."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.5") -> None:
        import socket

        self.target = (target_host, target_port)
        self.listener = socket.create_server((host, 0))
        self.url = f"http://{host}:{self.listener.getsockname()[1]}"
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:  # the agent is gone (teardown): refuse this one, keep serving
                client.close()
                continue
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._back, args=(upstream, client), daemon=True).start()

    def _back(self, upstream, client) -> None:
        """The agent's answers to the server (a subclass may tamper with them)."""
        self._pipe(upstream, client)

    @staticmethod
    def _pipe(src, dst) -> None:
        import socket

        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on
        except OSError:
            pass

    def cut(self) -> None:
        import socket

        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.conns.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()
