"""Many simulated agents in one process: the agent API a Jupyter server needs, no Docker.

Each node is one loopback port of one aiohttp app. It answers what the server asks of a
node (docs/agent-api.md): `GET /v1`, `/v1/health`, `/v1/resources`, sessions, `POST
/v1/executions` (a cell: `started`, `--lines` stdout lines `--interval` s apart, `exit`;
a command `sim LINES INTERVAL` sets both for that cell; records when the client asks for
them, else NDJSON), `GET /v1/executions/{id}`, cancel,
and the jobs list and change feed (long-polled, never changing). Any session id names a
session the node has. `POST /v1/sessions` takes `session_delay` s (a container start).

    python benchmarks/sim_agents.py --nodes 200 --max-seconds 300 [--certfile C --keyfile K]

(with a certificate the nodes serve https) prints one JSON line (`{"control": URL,
"nodes": [{"url", "node_id", "token"}]}`) and serves until stdin closes, SIGTERM, or
`--max-seconds`. The control port answers `GET /stats` (calls by route, streams now and
at most, session creations) and `POST /control` (`{"session_delay": s}`; `{"reset": true}`
zeroes the counters).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import ssl
import sys
import time
import uuid
from collections import Counter

from aiohttp import web

from jupyter_remote.protocol.records import RECORDS_TYPE, output_record

IMAGE = "jupyter-remote/python:local"
GIB = 1 << 30


def line(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class Node:
    """One simulated agent's state."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.sessions: dict[str, dict] = {}
        self.executions: dict[str, dict] = {}
        self.running = 0
        self.epoch = uuid.uuid4().hex


class Sim:
    """The nodes, the settings and the counters; aiohttp handlers as methods."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.token = args.token
        self.lines = args.lines
        self.interval = args.interval
        self.session_delay = args.session_delay
        self.by_port: dict[int, Node] = {}
        self.calls: Counter = Counter()
        self.streams = self.peak_streams = self.sessions_made = 0
        self.tasks: dict[tuple[str, str], asyncio.Task] = {}

    # -- plumbing ------------------------------------------------------------------------
    @web.middleware
    async def gate(self, request: web.Request, handler):
        route = request.match_info.route.resource
        self.calls[f"{request.method} {route.canonical if route else request.path}"] += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return error(401, "bad token", "unauthorized")
        return await handler(request)

    def node(self, request: web.Request) -> Node:
        return self.by_port[request.transport.get_extra_info("sockname")[1]]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.gate])
        get, post, delete = web.get, web.post, web.delete
        app.add_routes(
            [
                get("/v1", self.info),
                get("/v1/health", self.health),
                get("/v1/resources", self.resources),
                get("/v1/sessions", self.list_sessions),
                post("/v1/sessions", self.create_session),
                get("/v1/sessions/{id}", self.get_session),
                delete("/v1/sessions/{id}", self.delete_session),
                post("/v1/executions", self.execute),
                get("/v1/executions/{id}", self.get_execution),
                post("/v1/executions/{id}/cancel", self.cancel),
                get("/v1/jobs", self.jobs),
            ]
        )
        return app

    # -- node ----------------------------------------------------------------------------
    async def info(self, request: web.Request) -> web.Response:
        node = self.node(request)
        return web.json_response({"node_id": node.node_id, "api_version": 1, "version": "sim"})

    async def health(self, request: web.Request) -> web.Response:
        now = time.time()
        check = {"name": "docker", "ok": True, "severity": "critical", "message": "ok"}
        body = {"node_id": self.node(request).node_id, "status": "healthy", "healthy": True}
        body.update(busy=False, message="ok", sampled_at=now, checks=[check])
        return web.json_response(body)

    async def resources(self, request: web.Request) -> web.Response:
        node = self.node(request)
        memory = {"total": 64 * GIB, "available": 48 * GIB, "used": 16 * GIB, "percent": 25.0}
        disk = {"path": "/", "total": 500 * GIB, "used": 100 * GIB, "free": 400 * GIB}
        docker = {"ok": True, "version": "sim", "containers": len(node.sessions)}
        return web.json_response(
            {
                "cpu": {"percent": 5.0, "count": 16},
                "memory": memory,
                "disk": {**disk, "percent": 20.0},
                "load_avg": [0.1, 0.1, 0.1],
                "docker": {**docker, "containers_running": len(node.sessions)},
                "executions": {"running": node.running},
                "sessions": {"count": len(node.sessions)},
                "warm_pool": {},
                "jobs": {"running_tasks": 0},
                "own_containers": [],
                "images": [IMAGE],
                "sampled_at": time.time(),
            }
        )

    # -- sessions ------------------------------------------------------------------------
    def session(self, node: Node, session_id: str, spec: dict | None = None) -> dict:
        if session_id not in node.sessions:
            spec = spec or {}
            node.sessions[session_id] = {
                "session_id": session_id,
                "container_id": uuid.uuid4().hex,
                "path": "exec",
                "image": spec.get("image", IMAGE),
                "memory": 2 * GIB,
                "cpus": 1.0,
                "pids_limit": 1024,
                "workdir": None,
                "network": "none",
                "env": [],
                "idle_timeout": 3600,
                "created_at": time.time(),
                "last_used_at": time.time(),
                "running_executions": 0,
            }
        return node.sessions[session_id]

    async def list_sessions(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": list(self.node(request).sessions.values())})

    async def create_session(self, request: web.Request) -> web.Response:
        node, spec = self.node(request), await request.json()
        session_id = spec.get("session_id") or f"s-{uuid.uuid4().hex[:12]}"
        if session_id in node.sessions:
            return error(409, f"session {session_id!r} exists", "duplicate_session")
        await asyncio.sleep(self.session_delay)
        self.sessions_made += 1
        return web.json_response(self.session(node, session_id, spec), status=201)

    async def get_session(self, request: web.Request) -> web.Response:
        node, sid = self.node(request), request.match_info["id"]
        if sid not in node.sessions:
            return error(404, f"no session {sid!r}", "session_not_found")
        return web.json_response(node.sessions[sid])

    async def delete_session(self, request: web.Request) -> web.Response:
        node, sid = self.node(request), request.match_info["id"]
        if sid not in node.sessions:
            return error(404, f"no session {sid!r}", "session_not_found")
        return web.json_response(node.sessions.pop(sid))

    # -- executions ----------------------------------------------------------------------
    async def execute(self, request: web.Request) -> web.StreamResponse:
        node, body = self.node(request), await request.json()
        eid = body["execution_id"]
        if eid in node.executions:
            model = node.executions[eid]
            return error(409, f"{eid!r} was already received", "duplicate_execution", model)
        sid = body.get("session_id")
        model = {
            "execution_id": eid,
            "node_id": node.node_id,
            "session_id": sid,
            "mode": "session" if sid else "fresh",
            "path": "exec",
            "image": body.get("image", IMAGE),
            "argv": ["sh", "-c"],
            "status": "running",
            "returncode": None,
            "message": None,
            "started_at": time.time(),
            "finished_at": None,
            "duration": None,
            "log_size": 0,
        }
        node.executions[eid] = model
        if sid:
            self.session(node, sid)
        lines, interval = self.shape(body.get("command") or "")
        records = RECORDS_TYPE in request.headers.get("Accept", "")
        resp = web.StreamResponse(
            headers={"Content-Type": RECORDS_TYPE if records else "application/x-ndjson"}
        )
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        node.running += 1
        self.streams += 1
        self.peak_streams = max(self.peak_streams, self.streams)
        task = asyncio.current_task()
        self.tasks[node.node_id, eid] = task
        try:
            started = {"event": "started", "execution_id": eid, "node_id": node.node_id}
            started.update(mode=model["mode"], image=model["image"], session_id=sid)
            await resp.write(line({**started, "started_at": model["started_at"]}))
            for i in range(lines):
                if i:
                    await asyncio.sleep(interval)
                data = f"line {i + 1} of {eid}\n"
                if records:
                    await resp.write(output_record("stdout", data.encode()))
                else:
                    await resp.write(line({"event": "stdout", "data": data}))
            await asyncio.sleep(interval)
            self.finish(model, 0, "completed")
        except asyncio.CancelledError:
            self.finish(model, 130, "cancelled")
        except ConnectionError:  # the server went away; the "command" ends anyway
            self.finish(model, 0, "completed")
            return resp
        finally:
            node.running -= 1
            self.streams -= 1
            self.tasks.pop((node.node_id, eid), None)
        keys = ("returncode", "status", "duration", "message")
        exit_event = {"event": "exit", **{k: model[k] for k in keys}}
        exit_event.update(timed_out=False, cancelled=model["status"] == "cancelled")
        try:
            await resp.write(line({**exit_event, "oom_killed": False}))
            await resp.write_eof()
        except ConnectionError:
            pass
        return resp

    def shape(self, command: str) -> tuple[int, float]:
        """(lines, interval) of a cell: `sim LINES INTERVAL`, else the defaults."""
        words = command.split()
        if len(words) == 3 and words[0] == "sim":
            return int(words[1]), float(words[2])
        return self.lines, self.interval

    @staticmethod
    def finish(model: dict, returncode: int, status: str) -> None:
        now = time.time()
        model.update(returncode=returncode, status=status, finished_at=now)
        model["duration"] = now - model["started_at"]

    async def get_execution(self, request: web.Request) -> web.Response:
        node, eid = self.node(request), request.match_info["id"]
        if eid not in node.executions:
            return error(404, f"no execution {eid!r}", "execution_not_found")
        return web.json_response(node.executions[eid])

    async def cancel(self, request: web.Request) -> web.Response:
        node, eid = self.node(request), request.match_info["id"]
        task = self.tasks.get((node.node_id, eid))
        if task is None:
            return error(409, f"execution {eid!r} is not running", "not_running")
        task.cancel()
        await asyncio.sleep(0)
        return web.json_response(node.executions[eid])

    # -- jobs: none ever; the change feed holds the long poll, as a real agent's does ------
    async def jobs(self, request: web.Request) -> web.Response:
        node = self.node(request)
        if "since" in request.query:
            await asyncio.sleep(min(float(request.query.get("wait", 0)), 60))
        return web.json_response({"jobs": [], "next": None, "epoch": node.epoch, "version": 0})

    # -- control -------------------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "calls": dict(self.calls),
                "streams": self.streams,
                "peak_streams": self.peak_streams,
                "sessions_made": self.sessions_made,
            }
        )

    async def control(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "session_delay" in body:
            self.session_delay = float(body["session_delay"])
        if body.get("reset"):
            self.calls.clear()
            self.peak_streams = self.streams
            self.sessions_made = 0
        return await self.stats(request)


def error(status: int, message: str, reason: str, execution: dict | None = None):
    body = {"message": message, "reason": reason}
    if execution is not None:
        body["execution"] = execution
    return web.json_response(body, status=status)


def listening(host: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(1024)
    return sock


async def serve(args: argparse.Namespace) -> None:
    sim = Sim(args)
    runner = web.AppRunner(sim.app(), access_log=None, handle_signals=False)
    await runner.setup()
    tls = None
    if args.certfile:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.certfile, args.keyfile)
    scheme = "https" if tls else "http"
    nodes = []
    for i in range(args.nodes):
        sock = listening(args.host)
        port = sock.getsockname()[1]
        sim.by_port[port] = Node(f"sim-{i:03d}")
        await web.SockSite(runner, sock, ssl_context=tls).start()
        url = f"{scheme}://{args.host}:{port}"
        nodes.append({"url": url, "node_id": f"sim-{i:03d}", "token": args.token})
    control = web.Application()
    control.add_routes([web.get("/stats", sim.stats), web.post("/control", sim.control)])
    control_runner = web.AppRunner(control, access_log=None, handle_signals=False)
    await control_runner.setup()
    sock = listening(args.host)
    await web.SockSite(control_runner, sock).start()
    control_url = f"http://{args.host}:{sock.getsockname()[1]}"
    print(json.dumps({"control": control_url, "nodes": nodes}), flush=True)

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read(1) or done.set())
    try:
        await asyncio.wait_for(done.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        print("sim_agents: --max-seconds passed, stopping", file=sys.stderr)
    await runner.cleanup()
    await control_runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default="sim-token")
    parser.add_argument("--lines", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--session-delay", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--certfile", help="serve https with this certificate chain")
    parser.add_argument("--keyfile")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
