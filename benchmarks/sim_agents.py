"""Many simulated agents in one process: the agent API a Jupyter server needs, no Docker.

Each node is one loopback port of one aiohttp app. It answers what the server asks of a
node (docs/agent-api.md): `GET /v1`, `/v1/health`, `/v1/resources`, sessions, `POST
/v1/executions` (a cell: `started`, `--lines` stdout lines `--interval` s apart, `exit`;
a command `sim LINES INTERVAL` sets both for that cell; records when the client asks for
them, else NDJSON), `GET /v1/executions/{id}`, cancel,
and jobs: submit, get, stop (`stop_delay` s, as a real agent's kill grace), the list and the
change feed (long-polled, answered at the first change). A task whose command is `sleep S`
completes after S s; any other runs until stopped (a service). Any session id names a session
the node has. `POST /v1/sessions` takes `session_delay` s (a container start). A hung node
accepts connections and reads requests but never answers (until it is released).

    python benchmarks/sim_agents.py --nodes 200 --max-seconds 300 [--certfile C --keyfile K]

(with a certificate the nodes serve https) prints one JSON line (`{"control": URL,
"nodes": [{"url", "node_id", "token"}]}`) and serves until stdin closes, SIGTERM, or
`--max-seconds`. The control port answers `GET /stats` (calls by route, streams now and
at most, session creations, stop calls per agent job, when each execution arrived) and
`POST /control` (`{"session_delay": s}`, `{"stop_delay": s}`, `{"hang": [node_id, ...]}`
(the list replaces the last one; `[]`
releases them all); `{"reset": true}` zeroes the counters).
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
        self.jobs: dict[str, dict] = {}
        self.job_version = 0
        self.versions: dict[str, int] = {}  # job id -> the feed version it last changed at
        self.job_changed = asyncio.Event()  # replaced at each change: waiters see the old one set
        self.hung = False

    def changed(self, job: dict) -> None:
        self.job_version += 1
        self.versions[job["job_id"]] = self.job_version
        self.job_changed.set()
        self.job_changed = asyncio.Event()


class Sim:
    """The nodes, the settings and the counters; aiohttp handlers as methods."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.token = args.token
        self.lines = args.lines
        self.interval = args.interval
        self.session_delay = args.session_delay
        self.stop_delay = args.stop_delay
        self.max_seconds = args.max_seconds
        self.stop_calls: Counter = Counter()
        self.jobs_submitted = 0
        self.arrivals: list[float] = []  # wall time each execution reached its node
        self.released = asyncio.Event()
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
        node = self.node(request)
        if node.hung:  # accepted, read, never answered: until released (or the sim ends)
            self.calls["hung"] += 1
            while node.hung:
                released = self.released
                try:
                    await asyncio.wait_for(released.wait(), self.max_seconds)
                except asyncio.TimeoutError:
                    break
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
                post("/v1/jobs", self.submit_job),
                get("/v1/jobs/{id}", self.get_job),
                post("/v1/jobs/{id}/stop", self.stop_job),
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
                "jobs": {
                    "running_tasks": sum(j["status"] == "running" for j in node.jobs.values())
                },
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
        self.arrivals.append(time.time())
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

    # -- jobs: one task each (as the server sends them); slow stops; the change feed ------
    async def jobs(self, request: web.Request) -> web.Response:
        node = self.node(request)
        if "since" not in request.query:
            found = sorted(node.jobs.values(), key=lambda j: j["created_at"], reverse=True)
            body = {"jobs": found, "next": None, "epoch": node.epoch, "version": node.job_version}
            return web.json_response(body)
        since = int(request.query["since"])
        wait = min(float(request.query.get("wait", 0)), 60)
        if node.job_version <= since:
            try:
                await asyncio.wait_for(node.job_changed.wait(), wait)
            except asyncio.TimeoutError:
                pass
        changed = [j for j in node.jobs.values() if node.versions[j["job_id"]] > since]
        body = {"jobs": changed, "next": None, "epoch": node.epoch, "version": node.job_version}
        return web.json_response(body)

    async def submit_job(self, request: web.Request) -> web.Response:
        node, body = self.node(request), await request.json()
        job_id = body["job_id"]
        if job_id in node.jobs:
            return error(409, f"job {job_id!r} exists", "duplicate_job")
        now = time.time()
        spec = body["tasks"][0]
        task = {
            "index": 0,
            "name": spec.get("name") or "task-0",
            "argv": ["sh", "-c", spec.get("command") or ""],
            "spec": spec,
            "timeout": None,
            "status": "running",
            "returncode": None,
            "oom_killed": False,
            "container_id": uuid.uuid4().hex,
            "started_at": now,
            "finished_at": None,
            "message": None,
        }
        job = {
            "job_id": job_id,
            "name": body.get("name") or job_id,
            "status": "running",
            "tasks_total": 1,
            "tasks_done": 0,
            "created_at": now,
            "finished_at": None,
            "stop_requested": False,
            "parallelism": None,
            "tasks": [task],
        }
        node.jobs[job_id] = job
        node.changed(job)
        self.jobs_submitted += 1
        words = (spec.get("command") or "").replace(";", " ").split()
        if len(words) >= 2 and words[0] == "sleep":  # a batch task: it ends by itself
            asyncio.get_running_loop().call_later(
                float(words[1]), self.end_job, node, job, "completed", 0
            )
        return web.json_response(job, status=201)

    def end_job(self, node: Node, job: dict, status: str, returncode: int) -> None:
        task = job["tasks"][0]
        if task["status"] != "running":
            return
        now = time.time()
        task.update(status=status, returncode=returncode, finished_at=now)
        job.update(status=status, tasks_done=1, finished_at=now)
        node.changed(job)

    async def get_job(self, request: web.Request) -> web.Response:
        node, job_id = self.node(request), request.match_info["id"]
        if job_id not in node.jobs:
            return error(404, f"no job {job_id!r}", "job_not_found")
        return web.json_response(node.jobs[job_id])

    async def stop_job(self, request: web.Request) -> web.Response:
        """Takes `stop_delay` s while the task runs (a container that ignores SIGTERM)."""
        node, job_id = self.node(request), request.match_info["id"]
        if job_id not in node.jobs:
            return error(404, f"no job {job_id!r}", "job_not_found")
        self.stop_calls[job_id] += 1
        job = node.jobs[job_id]
        if job["tasks"][0]["status"] == "running":
            if not job["stop_requested"]:
                job["stop_requested"] = True
                node.changed(job)
            await asyncio.sleep(self.stop_delay)
            self.end_job(node, job, "stopped", 137)
        return web.json_response(job)

    # -- control -------------------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "calls": dict(self.calls),
                "streams": self.streams,
                "peak_streams": self.peak_streams,
                "sessions_made": self.sessions_made,
                "jobs_submitted": self.jobs_submitted,
                "arrivals": self.arrivals,
                "stop_calls": dict(self.stop_calls),
                "hung": [n.node_id for n in self.by_port.values() if n.hung],
            }
        )

    async def control(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "session_delay" in body:
            self.session_delay = float(body["session_delay"])
        if "stop_delay" in body:
            self.stop_delay = float(body["stop_delay"])
        if "hang" in body:
            hang = set(body["hang"])
            for node in self.by_port.values():
                node.hung = node.node_id in hang
            self.released.set()  # the waiters look again: a node still hung waits anew
            self.released = asyncio.Event()
        if body.get("reset"):
            self.calls.clear()
            self.peak_streams = self.streams
            self.sessions_made = 0
            self.jobs_submitted = 0
            self.stop_calls.clear()
            self.arrivals = []
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
    parser.add_argument("--stop-delay", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--certfile", help="serve https with this certificate chain")
    parser.add_argument("--keyfile")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
