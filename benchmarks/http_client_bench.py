"""Which async HTTP client the server speaks to agents with: aiohttp against tornado's own.

2,000 small GETs (an agent's /v1/health answer) to a tornado server on loopback, in a
process of its own, one after another and 8 at a time, with:
  - aiohttp, through the server's own client (jupyter_remote_server.agents.http.NodeHttp:
    keep-alive per node, a timeout on every call),
  - httpx's AsyncClient (keep-alive, the same connection cap), when httpx is installed,
  - tornado's AsyncHTTPClient (simple_httpclient, the default: a new connection per request).
Prints wall time, requests per second and the connections the server accepted.

Usage: .venv/bin/python benchmarks/http_client_bench.py   (bounded: ~30 s, each run 60 s at most)
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import time

REQUESTS = 2000
IN_FLIGHT = 8
ROUNDS = 3
BODY = json.dumps({"healthy": True, "busy": False, "node_id": "bench", "checks": []})


def serve(port: int) -> None:
    """The agent stand-in: /v1/health answers BODY; /count tells the connections accepted."""
    from tornado import httpserver, ioloop, web

    accepted = [0]

    class Counting(httpserver.HTTPServer):
        def handle_stream(self, stream, address):
            accepted[0] += 1
            return super().handle_stream(stream, address)

    class Health(web.RequestHandler):
        def get(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.finish(BODY)

    class Count(web.RequestHandler):
        def get(self) -> None:
            self.finish({"accepted": accepted[0]})

    app = web.Application([("/v1/health", Health), ("/count", Count)])
    Counting(app).listen(port, "127.0.0.1")
    ioloop.IOLoop.current().start()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def accepted(url: str) -> int:
    from tornado.httpclient import AsyncHTTPClient

    answer = await AsyncHTTPClient().fetch(f"{url}/count")
    return json.loads(answer.body)["accepted"]


async def run(get, in_flight: int) -> float:
    """Seconds for REQUESTS calls of `get`, `in_flight` at a time."""
    left = iter(range(REQUESTS))

    async def worker() -> None:
        for _ in left:
            await get()

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(in_flight))), 60)
    return time.perf_counter() - t0


async def main() -> None:
    from tornado.httpclient import AsyncHTTPClient

    from jupyter_remote_server.agents.http import NodeHttp

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):  # its start, on a busy machine
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)

    node = NodeHttp(url, "token", pool_maxsize=IN_FLIGHT + 2)
    tornado_client = AsyncHTTPClient()

    async def with_aiohttp() -> None:
        await node.json("GET", "/v1/health", timeout=10)

    async def with_tornado() -> None:
        answer = await tornado_client.fetch(
            f"{url}/v1/health", headers={"Authorization": "Bearer token"}, request_timeout=10
        )
        json.loads(answer.body)

    clients = {"aiohttp (NodeHttp, keep-alive)": with_aiohttp}
    try:
        import httpx
    except ImportError:
        httpx = None
    if httpx is not None:
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        httpx_client = httpx.AsyncClient(limits=limits, timeout=10, trust_env=False)

        async def with_httpx() -> None:
            answer = await httpx_client.get(
                f"{url}/v1/health", headers={"Authorization": "Bearer token"}
            )
            answer.json()

        clients["httpx (keep-alive)"] = with_httpx
    clients["tornado simple_httpclient"] = with_tornado
    print(f"{REQUESTS} GETs of /v1/health on loopback, best of {ROUNDS} rounds taken in turns")
    print(f"{'client':<34}{'in flight':>10}{'seconds':>9}{'req/s':>8}{'us/req':>8}{'conns':>7}")
    try:
        for in_flight in (1, IN_FLIGHT):
            best: dict[str, tuple[float, int]] = {}
            for _ in range(ROUNDS):  # in turns, so a busy moment of the machine hits both
                for name, get in clients.items():
                    await get()  # warm: imports, the first connection
                    before = await accepted(url)
                    took = await run(get, in_flight)
                    conns = await accepted(url) - before - 1  # less the /count call's own
                    best[name] = min(best.get(name, (took, conns)), (took, conns))
            for name, (took, conns) in best.items():
                print(
                    f"{name:<34}{in_flight:>10}{took:>9.2f}{REQUESTS / took:>8.0f}"
                    f"{took / REQUESTS * 1e6:>8.0f}{conns:>7}"
                )
    finally:
        await node.close()
        if httpx is not None:
            await httpx_client.aclose()
        server.terminate()


if __name__ == "__main__":
    asyncio.run(main())
