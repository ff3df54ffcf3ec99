"""The server at scale: simulated agents, one real Jupyter server, every scenario of issue 19.

One process of simulated agents (benchmarks/sim_agents.py: the agent API on N loopback
ports), a real `jupyter server` with the extension configured with them, and an asyncio load
generator here posting cells to `/remote/api/executions`. A cell streams 10 lines over 5 s.
Scenarios (`--only a,b` picks some; all by default), each with its target from issue 19:

- `existing`: 1,000 cells at once into 1,000 owners' sessions that already exist (made by
  one quick cell each, placed round-robin), at N = 200 and, as baselines, 1 and 10 nodes
  (their per-node connection cap raised to fit 1,000 and 100 cells a node). All succeed.
- `new`: 150 owners with no session start a cell at once (0.25 s per session on the agent).
  All succeed, no node turns suspect.
- `hung`: 48 of 200 agents hang (accept, read, never answer) for `SCALE_HUNG_SECONDS`; a
  burst of one cell per healthy node's session before (the baseline) and while they hang.
  No healthy node turns suspect; the cells all succeed.
- `autostop`: an autostop job of 64 services and one 4 s batch task; each stop takes 5 s on
  the agent; 20 fresh cells sent once the job is stopping. At most 2 stop calls a task (counted
  by the agents), the fresh cells all succeed.
- `panels`: a burst of 200 cells into existing sessions with no panel open (the baseline), 10
  Lab panels polling as the panel does (every 2 s after the last refresh: nodes and jobs,
  sessions in the background, engine states) with no cells, then the same burst with them
  open; twice, alternating (`SCALE_PANEL_ROUNDS`). Cell TTFB p50 (the rounds' mean) within
  1.5x of the baseline; `GET /v1/sessions` a second at the agents reported.
- `spread`: 500 fresh cells at once. No node above twice the mean, all succeed.
- `nofile`: a server whose soft open-files limit is 1,024 (and `RemoteApp.open_files_limit`
  1,024 where the server has that trait), 500 cells into existing sessions. Every refused
  cell gets a 503 with a reason, no traceback storm in the server log (at most 10).
- `store`: benchmarks/store_bench.py (1M execution rows): no save waits more than 20 ms.
- `https`: 500 cells at once into existing sessions on 200 agents served over https (a
  second simulated-agents process, the run's own CA). All succeed.
- `slots`: 200 cells at once on 10 nodes with the server's own per-node connection cap. All
  stream at once (the agents' peak of concurrent streams), none queued behind another.

Per burst: cells ok and failed (by reason), TTFB p50/p99, the server process's threads and
open fds (psutil, every 0.25 s), its CPU, node state changes in its log. Sizes: `SCALE_NODES`,
`SCALE_CELLS`, `SCALE_NEW`, `SCALE_HUNG`, `SCALE_SERVICES`, `SCALE_FRESH`, `SCALE_PANELS`,
`SCALE_PANEL_CELLS`, `SCALE_SPREAD`, `SCALE_NOFILE`, `SCALE_NOFILE_CELLS`, `SCALE_HTTPS_CELLS`,
`SCALE_SLOTS_CELLS`; `SCALE_BASELINES=0`
skips the 1- and 10-node runs of `existing`; `STORE_BENCH_ROWS` is store_bench's.
`SCALE_SERVER_TREE=DIR` runs the server from another checkout (its `server_ext` beside it);
`BENCH_TLS=1` has the agents serve https. Every wait has a limit (`SCENARIO_LIMIT` s a
scenario, 120 s a cell).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from processes import TLS, run_ca, tls_options  # noqa: E402
from server_process import ServerProcess  # noqa: E402

IMAGE = "jupyter-remote/python:local"  # the image every simulated node has

CELLS = int(os.environ.get("SCALE_CELLS", "1000"))
NEW = int(os.environ.get("SCALE_NEW", "150"))
NODES = int(os.environ.get("SCALE_NODES", "200"))
HUNG = int(os.environ.get("SCALE_HUNG", "48"))
HUNG_SECONDS = float(os.environ.get("SCALE_HUNG_SECONDS", "30"))  # past suspect_after (10 s)
SERVICES = int(os.environ.get("SCALE_SERVICES", "64"))
FRESH = int(os.environ.get("SCALE_FRESH", "20"))
STOP_DELAY = 5.0  # seconds each stop call takes on the agent (issue 19)
PANELS = int(os.environ.get("SCALE_PANELS", "10"))
PANEL_CELLS = int(os.environ.get("SCALE_PANEL_CELLS", "200"))
PANEL_IDLE = 10.0  # seconds the panels poll with no cells
PANEL_ROUNDS = int(os.environ.get("SCALE_PANEL_ROUNDS", "2"))
SPREAD = int(os.environ.get("SCALE_SPREAD", "500"))
NOFILE = int(os.environ.get("SCALE_NOFILE", "1024"))
NOFILE_CELLS = int(os.environ.get("SCALE_NOFILE_CELLS", "500"))
HTTPS_CELLS = int(os.environ.get("SCALE_HTTPS_CELLS", "500"))
SLOTS_NODES, SLOTS_CELLS = 10, int(os.environ.get("SCALE_SLOTS_CELLS", "200"))
TRACEBACK_STORM = 10  # more Traceback lines than this in a burst's log is a storm
BASELINES = os.environ.get("SCALE_BASELINES", "1") != "0"
SCENARIO_LIMIT = float(os.environ.get("SCENARIO_LIMIT", "300"))
SCENARIOS = (
    "existing",
    "new",
    "hung",
    "autostop",
    "panels",
    "spread",
    "nofile",
    "store",
    "https",
    "slots",
)
SMALL = 10  # the node count the thread count is compared with
LINES, INTERVAL = 10, 0.5  # 10 lines over 5 s
SESSION_DELAY = 0.25  # seconds a simulated agent takes to make a session
CELL_TIMEOUT = 120  # no cell waits longer: the run is bounded
WARM_AT_ONCE = 8  # first cells (session making) in flight at once
REMOTE = {"poll_interval": 5.0, "suspect_after": 10.0, "lost_after": 60.0}  # the defaults
HERE = Path(__file__).resolve().parent


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def start_sim(nodes: int, tmp: Path, tls: bool = TLS) -> tuple[subprocess.Popen, dict]:
    """The simulated agents; over https with `tls` (BENCH_TLS=1: the run's CA trusted from
    here on, by this process and the servers it starts)."""
    options = tls_options(run_ca(), "127.0.0.1") if tls else ()
    sim = subprocess.Popen(
        [sys.executable, str(HERE / "sim_agents.py"), "--nodes", str(nodes), *options]
        + ["--lines", str(LINES), "--interval", str(INTERVAL), "--max-seconds", "1500"]
        + ["--stop-delay", str(STOP_DELAY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp / ("sim-https.log" if tls else "sim.log"), "wb"),
    )
    return sim, json.loads(sim.stdout.readline())


def start_server(
    tmp: Path, nodes: list[dict], nofile: int | None = None, raise_cap: bool = True, **extra
) -> ServerProcess:
    """A server with these nodes; each node's connection cap (`pool_maxsize`) raised where
    fewer nodes would otherwise queue the burst's cells behind it (at N=1 and 10), else the
    server's own. With `nofile`, the server's soft open-files limit is `nofile` from its
    start (jupyter_server's `min_open_files_limit`, 4,096 by default, lowered to it too)."""
    tmp.mkdir()
    agents = [SimpleNamespace(**n) for n in nodes]
    per_node = -(-CELLS // len(nodes)) + 2  # two more for liveness calls
    if per_node > 10 and raise_cap:
        extra.setdefault("pool_maxsize", per_node)
    server = LimitedServer(tmp, agents, **REMOTE, **extra)
    if nofile is not None:
        server.nofile = nofile
        config = json.loads(server.config.read_text())
        config["ServerApp"]["min_open_files_limit"] = nofile
        server.config.write_text(json.dumps(config))
    tree = os.environ.get("SCALE_SERVER_TREE")
    if tree:
        server.env["PYTHONPATH"] = f"{tree}:{tree}/server_ext"
    return server.start()


class LimitedServer(ServerProcess):
    """A ServerProcess whose child may start with a lower soft RLIMIT_NOFILE."""

    nofile: int | None = None

    def start(self) -> ServerProcess:
        """ServerProcess.start, the limit set in the child between fork and exec."""
        if self.nofile is None:
            return super().start()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = (self.nofile, hard)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, f"--config={self.config}"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit),
            )
        self.wait_for(lambda: healthy_nodes(self) == self.expect_nodes, 60)
        return self

    def soft_nofile(self) -> int:
        return resource.prlimit(self.proc.pid, resource.RLIMIT_NOFILE)[0]


def has_trait(name: str) -> bool:
    """Whether the server's RemoteApp (the checkout it runs from) has this trait."""
    tree = os.environ.get("SCALE_SERVER_TREE")
    env = {**os.environ, "PYTHONPATH": f"{tree}:{tree}/server_ext"} if tree else None
    code = (
        "from jupyter_remote_server.app import RemoteApp; "
        f"print(RemoteApp.class_traits().get({name!r}) is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip() == "True"


def healthy_nodes(server: ServerProcess, exclude: frozenset = frozenset()) -> int:
    nodes = server.get("nodes")["nodes"]
    return sum(n["state"] in ("healthy", "busy") for n in nodes if n["node_id"] not in exclude)


def transitions(text: str) -> list[tuple[str, str, str]]:
    """(node, old, new) of each node state change in a piece of the server's log."""
    return re.findall(r"node (\S+): (\w+) -> (\w+)", text)


class Sampler:
    """The server process's threads, fds and CPU while a burst runs."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.threads: list[int] = []
        self.fds: list[int] = []

    def sample(self) -> None:
        self.threads.append(self.proc.num_threads())
        self.fds.append(self.proc.num_fds())

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.25)

    def cpu(self) -> float:
        times = self.proc.cpu_times()
        return times.user + times.system


class Load:
    """The load generator: cells posted to the server, each timed to its first byte."""

    def __init__(self, server: ServerProcess, sim: dict) -> None:
        self.server = server
        self.sim = sim
        self.url = f"{server.url}/executions"
        self.headers = {"Authorization": f"token {server.token}"}
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            timeout=aiohttp.ClientTimeout(total=CELL_TIMEOUT),
        )

    async def cell(self, body: dict) -> dict:
        """One cell: {ok, reason, ttfb, node}."""
        t0 = time.perf_counter()
        try:
            async with self.http.post(self.url, json=body, headers=self.headers) as resp:
                if resp.status != 200:
                    text = await resp.text()
                    try:
                        why = json.loads(text).get("reason")
                    except ValueError:
                        why = text[:60]
                    return {"ok": False, "reason": f"HTTP {resp.status} {why}"}
                ttfb, data = None, bytearray()
                async for chunk in resp.content.iter_any():
                    ttfb = ttfb if ttfb is not None else time.perf_counter() - t0
                    data += chunk
        except asyncio.TimeoutError:
            return {"ok": False, "reason": f"no end within {CELL_TIMEOUT} s"}
        except aiohttp.ClientError as exc:
            return {"ok": False, "reason": type(exc).__name__}
        events = [json.loads(line) for line in data.splitlines() if line.strip()]
        out = sum(e["event"] == "stdout" for e in events)
        node = next((e.get("node_id") for e in events if e["event"] == "started"), None)
        last = events[-1] if events else {}
        want = int(body["command"].split()[1])
        if last.get("event") != "exit" or last.get("status") != "completed" or out != want:
            message = re.sub(r"https?://[^ /]+", "URL", last.get("message") or "")
            why = f"exit {last.get('status')}: {re.sub(r'sim-[0-9]+', 'NODE', message)[:150]}"
            return {"ok": False, "reason": why, "ttfb": ttfb, "node": node}
        return {"ok": True, "ttfb": ttfb, "node": node}

    async def warm(self, bodies: list[dict]) -> list[dict]:
        """Quick first cells, a few at a time: each makes its owner's session."""
        gate = asyncio.Semaphore(WARM_AT_ONCE)

        async def one(body: dict) -> dict:
            async with gate:
                return await self.cell(body)

        return await asyncio.gather(*(one(b) for b in bodies))

    async def api(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        """One call to the server's REST API: (status, JSON body)."""
        url = f"{self.server.url}/{path}"
        async with self.http.request(method, url, headers=self.headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def sim_stats(self) -> dict:
        async with self.http.get(f"{self.sim['control']}/stats") as resp:
            return await resp.json()

    async def control(self, **body) -> dict:
        async with self.http.post(f"{self.sim['control']}/control", json=body) as resp:
            return await resp.json()

    def log_from(self, at: int) -> str:
        with open(self.server.log, "rb") as log:
            log.seek(at)
            return log.read().decode("utf-8", "replace")

    async def burst(self, name: str, bodies: list[dict], reset: bool = True) -> dict:
        """All the cells at once; what the server did meanwhile (the agents' calls counted
        from the burst's start, or from the last reset with `reset=False`)."""
        sampler = Sampler(self.server.proc.pid)
        sampler.sample()
        idle_threads, idle_fds = sampler.threads[0], sampler.fds[0]
        log_at = self.server.log.stat().st_size
        if reset:
            await self.control(reset=True)
        sim, me = psutil.Process(self.sim["pid"]), psutil.Process()
        others = [sum(p.cpu_times()[:2]) for p in (sim, me)]
        load = os.getloadavg()[0]
        cpu0, t0, wall0 = sampler.cpu(), time.perf_counter(), time.time()
        watch = asyncio.get_running_loop().create_task(sampler.run())
        results = await asyncio.gather(*(self.cell(b) for b in bodies))
        watch.cancel()
        wall, cpu = time.perf_counter() - t0, sampler.cpu() - cpu0
        others = [sum(p.cpu_times()[:2]) - o for p, o in zip((sim, me), others, strict=True)]
        stats = await self.sim_stats()
        calls = stats["calls"]
        arrived = sorted((t - wall0) * 1000 for t in stats["arrivals"] if t >= wall0)
        polls = calls.get("GET /v1/health", 0) / self.server.expect_nodes / wall
        text = self.log_from(log_at)
        moves = transitions(text)
        ttfbs = sorted(r["ttfb"] * 1000 for r in results if r.get("ttfb") is not None)
        per_node = Counter(r["node"] for r in results if r.get("node"))
        return {
            "scenario": name,
            "nodes": self.server.expect_nodes,
            "cells": len(bodies),
            "ok": sum(r["ok"] for r in results),
            "failed": dict(Counter(r["reason"] for r in results if not r["ok"])),
            "ttfb_p50_ms": round(pct(ttfbs, 50), 1),
            "ttfb_p99_ms": round(pct(ttfbs, 99), 1),
            "to_agent_first_ms": round(arrived[0] if arrived else float("nan"), 1),
            "to_agent_p50_ms": round(pct(arrived, 50), 1),
            "to_agent_max_ms": round(arrived[-1] if arrived else float("nan"), 1),
            "seconds": round(wall, 1),
            "threads_idle": idle_threads,
            "threads_max": max(sampler.threads),
            "fds_idle": idle_fds,
            "fds_max": max(sampler.fds),
            "server_cpu_s": round(cpu, 1),
            "server_cpu_pct": round(100 * cpu / wall),
            "sim_cpu_s": round(others[0], 1),
            "loadgen_cpu_s": round(others[1], 1),
            "loadavg_1m_at_start": round(load, 1),
            "health_polls_per_node_s": round(polls, 3),
            "agent_calls": calls,
            "to_suspect": sum(new == "suspect" for _, _, new in moves),
            "to_lost": sum(new == "lost" for _, _, new in moves),
            "suspect_nodes": sorted({n for n, _, new in moves if new == "suspect"}),
            "tracebacks": text.count("Traceback"),
            "nodes_used": len(per_node),
            "most_on_a_node": max(per_node.values(), default=0),
            "per_node": dict(per_node),
        }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if p < 100 else values[-1]


def cell(owner: str, lines: int = LINES, interval: float = INTERVAL, **extra) -> dict:
    return {"owner": owner, "command": f"sim {lines} {interval}", **extra}


async def existing(server: ServerProcess, sim: dict, nodes: list[dict], tag: str) -> dict:
    """CELLS owners, their sessions made first (round-robin on the nodes), then all at once."""
    load = Load(server, sim)
    try:
        owners = [f"{tag}-o{i}" for i in range(CELLS)]
        warm = [cell(o, 0, 0, node=nodes[i % len(nodes)]["node_id"]) for i, o in enumerate(owners)]
        t0 = time.perf_counter()
        made = await load.warm(warm)
        failed = Counter(r["reason"] for r in made if not r["ok"])
        took = time.perf_counter() - t0
        print(f"  {CELLS} sessions made in {took:.1f} s; not made: {dict(failed)}", flush=True)
        return await load.burst(f"existing N={len(nodes)}", [cell(o) for o in owners])
    finally:
        await load.http.close()


async def new_sessions(server: ServerProcess, sim: dict, tag: str) -> dict:
    """NEW owners without a session start a cell at once; each session takes SESSION_DELAY."""
    load = Load(server, sim)
    control = sim["control"]
    try:
        await load.http.post(f"{control}/control", json={"session_delay": SESSION_DELAY})
        bodies = [cell(f"{tag}-new{i}") for i in range(NEW)]
        return await load.burst(f"new sessions N={server.expect_nodes}", bodies)
    finally:
        await load.http.post(f"{control}/control", json={"session_delay": 0})
        await load.http.close()


def show(r: dict) -> None:
    failed = ", ".join(f"{n} {why}" for why, n in r["failed"].items()) or "none"
    print(
        f"  {r['scenario']:<22} ok {r['ok']}/{r['cells']} (failed: {failed}); "
        f"TTFB p50 {r['ttfb_p50_ms']:.0f} ms p99 {r['ttfb_p99_ms']:.0f} ms; "
        f"at the agent first {r['to_agent_first_ms']:.0f} ms, p50 "
        f"{r['to_agent_p50_ms']:.0f} ms, last {r['to_agent_max_ms']:.0f} ms; "
        f"{r['seconds']} s",
        flush=True,
    )
    print(
        f"  {'':<22} server threads {r['threads_idle']} idle -> {r['threads_max']} max, "
        f"fds {r['fds_idle']} -> {r['fds_max']}, CPU {r['server_cpu_s']} s "
        f"({r['server_cpu_pct']} %; simulated agents {r['sim_cpu_s']} s, load generator "
        f"{r['loadgen_cpu_s']} s, load avg {r['loadavg_1m_at_start']} at start); "
        f"health polls {r['health_polls_per_node_s']:.2f}/node/s; "
        f"to suspect {r['to_suspect']}, to lost {r['to_lost']}, "
        f"tracebacks {r['tracebacks']}; {r['nodes_used']} nodes used, "
        f"at most {r['most_on_a_node']} cells on one",
        flush=True,
    )


class Run:
    """The simulated agents and the servers of one run: one shared server at N nodes for the
    scenarios that leave the nodes as they found them, servers of their own for the rest."""

    def __init__(self, tmp: Path, sim: dict) -> None:
        self.tmp = tmp
        self.sim = sim
        self.nodes = sim["nodes"]
        self.server: ServerProcess | None = None

    def shared(self) -> ServerProcess:
        if self.server is None:
            self.server = start_server(self.tmp / "shared", self.nodes)
            print(f"  shared server with {len(self.nodes)} nodes (log {self.server.log})")
        return self.server

    def own(self, name: str, nodes: list[dict] | None = None, **extra) -> ServerProcess:
        server = start_server(self.tmp / name, nodes or self.nodes, **extra)
        print(f"  server of its own (log {server.log})", flush=True)
        return server

    def close_shared(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def failures(r: dict) -> str:
    return ", ".join(f"{n} {why}" for why, n in r["failed"].items()) or "none"


async def sc_existing(run: Run) -> dict:
    baselines = {}
    if BASELINES:
        for n in (1, SMALL):
            server = run.own(f"n{n}", run.nodes[:n])
            try:
                baselines[n] = await existing(server, run.sim, run.nodes[:n], f"n{n}")
            finally:
                server.stop()
            show(baselines[n])
    big = await existing(run.shared(), run.sim, run.nodes, "big")
    show(big)
    figures = (
        f"{big['ok']}/{CELLS} ok (failed: {failures(big)}), TTFB p50 {big['ttfb_p50_ms']:.0f} "
        f"ms p99 {big['ttfb_p99_ms']:.0f} ms, server threads max {big['threads_max']}, fds max "
        f"{big['fds_max']}, CPU {big['server_cpu_s']} s, {big['to_suspect']} to suspect"
    )
    if baselines:
        one, small = baselines[1], baselines[SMALL]
        figures += (
            f"; TTFB p50 {big['ttfb_p50_ms'] / one['ttfb_p50_ms']:.2f}x N=1's "
            f"({one['ttfb_p50_ms']:.0f} ms), threads max {big['threads_max']} vs "
            f"{small['threads_max']} at N={SMALL}"
        )
    return {
        "verdict": verdict(big["ok"] == CELLS),
        "target": f"{CELLS} concurrent cells all succeed",
        "figures": figures,
        "bursts": [*baselines.values(), big],
    }


async def sc_new(run: Run) -> dict:
    r = await new_sessions(run.shared(), run.sim, "new")
    show(r)
    return {
        "verdict": verdict(r["ok"] == NEW and r["to_suspect"] == 0),
        "target": f"{NEW} new kernels at once all succeed, no node turns suspect",
        "figures": (
            f"{r['ok']}/{NEW} ok (failed: {failures(r)}), TTFB p50 {r['ttfb_p50_ms']:.0f} ms "
            f"p99 {r['ttfb_p99_ms']:.0f} ms, {r['to_suspect']} nodes to suspect, "
            f"{r['nodes_used']} nodes used"
        ),
        "bursts": [r],
    }


async def sc_hung(run: Run) -> dict:
    """HUNG nodes spread over the pool hang for HUNG_SECONDS; one cell per healthy node's
    session before (the baseline) and once the hung ones are past suspect_after."""
    server = run.own("hung")
    load = Load(server, run.sim)
    hung = frozenset(run.nodes[i * len(run.nodes) // HUNG]["node_id"] for i in range(HUNG))
    healthy = [n["node_id"] for n in run.nodes if n["node_id"] not in hung]
    usable: list[int] = []
    answered: list[float] = []  # seconds GET /nodes took: the server's loop, busy or not
    stop = asyncio.Event()

    async def watch() -> None:  # how many healthy nodes the server would use, every second
        while not stop.is_set():
            try:
                t0 = time.perf_counter()
                status, body = await asyncio.wait_for(load.api("GET", "nodes"), 10)
                answered.append(time.perf_counter() - t0)
                states = {n["node_id"]: n["state"] for n in body["nodes"]}
                usable.append(sum(states.get(n) in ("healthy", "busy") for n in healthy))
            except (asyncio.TimeoutError, aiohttp.ClientError, KeyError):
                usable.append(-1)  # the server did not answer GET /nodes within 10 s
            await asyncio.sleep(1.0)

    try:
        owners = [f"hung-{n}" for n in healthy]
        made = await load.warm(
            [cell(o, 0, 0, node=n) for o, n in zip(owners, healthy, strict=True)]
        )
        print(f"  {sum(m['ok'] for m in made)}/{len(owners)} sessions made", flush=True)
        lone_base = await lone(load, owners)
        base = await load.burst("hung: none hung", [cell(o) for o in owners])
        show(base)
        log_at = server.log.stat().st_size
        await load.control(reset=True, hang=sorted(hung))
        t0 = time.perf_counter()
        watcher = asyncio.get_running_loop().create_task(watch())
        await asyncio.sleep(REMOTE["suspect_after"] + 2)  # the hung ones are suspect by now
        lone_during = await lone(load, owners)
        during = await load.burst(f"hung: {HUNG} hung", [cell(o) for o in owners], reset=False)
        show(during)
        await asyncio.sleep(max(0.0, HUNG_SECONDS - (time.perf_counter() - t0)))
        stop.set()
        await watcher
        window = time.perf_counter() - t0
        held = (await load.sim_stats())["calls"].get("hung", 0)
    finally:
        await load.control(hang=[])
        await load.http.close()
        server.stop()
    moves = transitions(load.log_from(log_at))
    bad = sorted({n for n, _, new in moves if new in ("suspect", "lost") and n not in hung})
    hung_suspect = {n for n, _, new in moves if new == "suspect" and n in hung}
    seen = [u for u in usable if u >= 0]
    slower = during["ttfb_p50_ms"] / base["ttfb_p50_ms"]
    ok = during["ok"] == len(owners) and not bad
    return {
        "verdict": verdict(ok),
        "target": f"{HUNG} of {len(run.nodes)} agents hung: no healthy node turns suspect",
        "figures": (
            f"healthy nodes turned suspect or lost: {len(bad)} {bad[:10]}; hung nodes turned "
            f"suspect: {len(hung_suspect)}/{HUNG} in {window:.0f} s; healthy nodes usable: "
            f"min {min(seen, default=-1)}/{len(healthy)} (GET /nodes p50 "
            f"{1000 * pct(sorted(answered), 50):.0f} ms, max {1000 * max(answered, default=0):.0f} "
            f"ms, unanswered in 10 s: {usable.count(-1)}x); cells on the healthy ones "
            f"{during['ok']}/{len(owners)} ok "
            f"(failed: {failures(during)}), TTFB p50 {during['ttfb_p50_ms']:.0f} ms p99 "
            f"{during['ttfb_p99_ms']:.0f} ms vs {base['ttfb_p50_ms']:.0f} / "
            f"{base['ttfb_p99_ms']:.0f} ms with none hung = {slower:.2f}x; "
            f"a lone cell's TTFB p50 {lone_during:.0f} ms vs {lone_base:.0f} ms; "
            f"{held} calls held by the hung agents; {during['tracebacks']} tracebacks"
        ),
        "bursts": [base, during],
        "healthy_to_suspect": bad,
        "usable_min": min(seen, default=-1),
    }


async def lone(load: Load, owners: list[str], n: int = 10) -> float:
    """TTFB p50 (ms) of `n` quick cells sent one after another: no burst around them."""
    ttfbs = []
    for owner in owners[:n]:
        r = await load.cell(cell(owner, 1, 0))
        if r.get("ttfb") is not None:
            ttfbs.append(r["ttfb"] * 1000)
    return pct(sorted(ttfbs), 50)


async def sc_autostop(run: Run) -> dict:
    """An autostop job of SERVICES services and a 4 s batch task; FRESH fresh cells once it
    is stopping; stop calls counted by the simulated agents (STOP_DELAY s each)."""
    server = run.shared()
    load = Load(server, run.sim)
    try:
        await load.control(reset=True, stop_delay=STOP_DELAY)
        log_at = server.log.stat().st_size
        tasks = [{"name": f"svc-{i}", "command": "serve", "service": True} for i in range(SERVICES)]
        tasks.append({"name": "batch", "command": "sleep 4"})
        body = {"name": "autostop", "image": IMAGE, "autostop": True, "tasks": tasks}
        status, job = await load.api("POST", "jobs", json=body)
        if status not in (200, 201):
            raise RuntimeError(f"POST /jobs: HTTP {status} {job}")
        job_id, t0 = job["job_id"], time.perf_counter()
        while job["status"] != "stopping" and time.perf_counter() - t0 < 60:
            await asyncio.sleep(0.1)
            status, job = await load.api("GET", f"jobs/{job_id}")
        if job["status"] != "stopping":
            raise RuntimeError(f"the job never turned stopping: {job['status']}")
        print(f"  stopping {time.perf_counter() - t0:.1f} s after submit", flush=True)
        bodies = [{"command": "sim 2 0.2", "fresh": True, "image": IMAGE} for _ in range(FRESH)]
        fresh = await load.burst("autostop: fresh cells", bodies, reset=False)
        show(fresh)
        status, final = await load.api("GET", f"jobs/{job_id}/wait", params={"timeout": "100"})
        took = time.perf_counter() - t0
        stats = await load.sim_stats()
        await asyncio.sleep(0.5)
        moves = transitions(load.log_from(log_at))
    finally:
        await load.http.close()
    calls = {k: v for k, v in stats["stop_calls"].items() if k.startswith(f"{job_id}.")}
    services = {f"{job_id}.{i}" for i in range(SERVICES)}
    most = max(calls.values(), default=0)
    batch_end = final["tasks"][-1].get("finished_at") or 0
    late = (final.get("finished_at") or 0) - batch_end if batch_end else float("nan")
    suspect = sum(new == "suspect" for _, _, new in moves)
    placed = len({t.get("node_id") for t in final["tasks"]})
    ok = most <= 2 and services <= set(calls) and fresh["ok"] == FRESH
    return {
        "verdict": verdict(ok),
        "target": f"autostop of {SERVICES} services: at most 2 stop calls a task, {FRESH} fresh "
        "cells meanwhile all succeed",
        "figures": (
            f"{sum(calls.values())} stop calls for {SERVICES} services (at most {most} a task, "
            f"{len(services - set(calls))} never asked) on {placed} nodes; job {final['status']} "
            f"{took:.1f} s after submit, {late:.1f} s after its batch; fresh cells "
            f"{fresh['ok']}/{FRESH} ok (failed: {failures(fresh)}), TTFB p50 "
            f"{fresh['ttfb_p50_ms']:.0f} ms p99 {fresh['ttfb_p99_ms']:.0f} ms, all ended in "
            f"{fresh['seconds']} s; {suspect} nodes to suspect"
        ),
        "bursts": [fresh],
        "stop_calls": calls,
    }


async def panel(load: Load, stop: asyncio.Event, refreshes: list, sessions: list, errors: Counter):
    """One open Lab panel (labextension panel.ts): nodes and jobs, then sessions in the
    background (one at a time), then engine states; again 2 s after a refresh ends."""

    async def get(path: str, timeout: float = 20) -> None:
        t0 = time.perf_counter()
        try:
            status, _ = await asyncio.wait_for(load.api("GET", path), timeout)
            if status != 200:
                errors[f"{path} HTTP {status}"] += 1
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            errors[f"{path} {type(exc).__name__}"] += 1
        if path == "sessions":
            sessions.append(time.perf_counter() - t0)

    pending: asyncio.Task | None = None
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.gather(get("nodes"), get("jobs"))
        if pending is None or pending.done():
            pending = asyncio.get_running_loop().create_task(get("sessions"))
        await get("engine-states")
        refreshes.append(time.perf_counter() - t0)
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except asyncio.TimeoutError:
            pass
    if pending is not None:
        await pending


async def sc_panels(run: Run) -> dict:
    """PANEL_ROUNDS rounds of: a burst with no panel open, then PANELS panels (alone for
    PANEL_IDLE s in the first round), a burst with them open; the p50s of each kind
    averaged, so that the other load of a shared machine falls on both alike."""
    server = run.shared()
    load = Load(server, run.sim)
    refreshes: list[float] = []
    sessions: list[float] = []
    errors: Counter = Counter()
    stop = asyncio.Event()
    pollers: list[asyncio.Task] = []
    nones, opens = [], []

    def open_panels() -> None:
        stop.clear()
        pollers[:] = [
            asyncio.get_running_loop().create_task(panel(load, stop, refreshes, sessions, errors))
            for _ in range(PANELS)
        ]

    async def close_panels() -> None:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*pollers), 30)

    try:
        owners = [f"panel-o{i}" for i in range(PANEL_CELLS)]
        nodes = [n["node_id"] for n in run.nodes]
        await load.warm([cell(o, 0, 0, node=nodes[i % len(nodes)]) for i, o in enumerate(owners)])
        for round_ in range(PANEL_ROUNDS):
            nones.append(await load.burst("panels: none open", [cell(o) for o in owners]))
            show(nones[-1])
            open_panels()
            if round_ == 0:
                await load.control(reset=True)
                sampler = Sampler(server.proc.pid)
                cpu0, t0 = sampler.cpu(), time.perf_counter()
                await asyncio.sleep(PANEL_IDLE)
                idle_wall, idle_cpu = time.perf_counter() - t0, sampler.cpu() - cpu0
                idle_calls = (await load.sim_stats())["calls"]
                idle_refresh, idle_sessions = sorted(refreshes), sorted(sessions)
            else:
                await asyncio.sleep(2.0)  # the panels' first refreshes are made
            opens.append(await load.burst(f"panels: {PANELS} open", [cell(o) for o in owners]))
            show(opens[-1])
            await close_panels()
    finally:
        stop.set()
        await load.http.close()
    per_s = idle_calls.get("GET /v1/sessions", 0) / idle_wall
    burst_per_s = statistics.mean(
        d["agent_calls"].get("GET /v1/sessions", 0) / d["seconds"] for d in opens
    )
    none_p50 = statistics.mean(d["ttfb_p50_ms"] for d in nones)
    open_p50 = statistics.mean(d["ttfb_p50_ms"] for d in opens)
    ratio = open_p50 / none_p50
    ok = ratio <= 1.5 and all(d["ok"] == PANEL_CELLS for d in opens)

    def p50s(bursts: list[dict]) -> str:
        return ", ".join(f"{d['ttfb_p50_ms']:.0f}" for d in bursts)

    return {
        "verdict": verdict(ok),
        "target": f"{PANELS} open panels: cell TTFB p50 within 1.5x of none",
        "figures": (
            f"{PANEL_CELLS} cells, {PANEL_ROUNDS} rounds: TTFB p50 {open_p50:.0f} ms with "
            f"{PANELS} panels ({p50s(opens)}) vs {none_p50:.0f} ms with none ({p50s(nones)}) "
            f"= {ratio:.2f}x; {sum(d['ok'] for d in opens)}/{PANEL_CELLS * PANEL_ROUNDS} ok; "
            f"panels alone for {idle_wall:.0f} s: GET /v1/sessions {per_s:.1f}/s at the agents "
            f"({burst_per_s:.1f}/s during the cells), server CPU "
            f"{100 * idle_cpu / idle_wall:.0f} %, a refresh p50 "
            f"{1000 * pct(idle_refresh, 50):.0f} ms, GET /sessions p50 "
            f"{1000 * pct(idle_sessions, 50):.0f} ms; panel errors: {dict(errors) or 'none'}"
        ),
        "bursts": [*nones, *opens],
        "sessions_calls_per_s": per_s,
    }


async def sc_spread(run: Run) -> dict:
    load = Load(run.shared(), run.sim)
    try:
        bodies = [
            {"command": f"sim {LINES} {INTERVAL}", "fresh": True, "image": IMAGE}
            for _ in range(SPREAD)
        ]
        r = await load.burst("spread: fresh cells", bodies)
        show(r)
    finally:
        await load.http.close()
    mean = SPREAD / len(run.nodes)
    most = max(2 * mean, 1)  # fewer cells than nodes: one a node is the best spread
    return {
        "verdict": verdict(r["ok"] == SPREAD and r["most_on_a_node"] <= most),
        "target": f"{SPREAD} session-less cells at once: no node above twice the mean",
        "figures": (
            f"{r['ok']}/{SPREAD} ok (failed: {failures(r)}), at most {r['most_on_a_node']} "
            f"cells on a node (mean {mean:.1f}, twice: {2 * mean:.1f}), {r['nodes_used']} "
            f"nodes used; TTFB p50 {r['ttfb_p50_ms']:.0f} ms p99 {r['ttfb_p99_ms']:.0f} ms"
        ),
        "bursts": [r],
    }


async def sc_nofile(run: Run) -> dict:
    trait = has_trait("open_files_limit")
    extra = {"open_files_limit": NOFILE} if trait else {}
    server = run.own("nofile", nofile=NOFILE, **extra)
    load = Load(server, run.sim)
    try:
        soft = server.soft_nofile()
        owners = [f"nofile-o{i}" for i in range(NOFILE_CELLS)]
        nodes = [n["node_id"] for n in run.nodes]
        made = await load.warm(
            [cell(o, 0, 0, node=nodes[i % len(nodes)]) for i, o in enumerate(owners)]
        )
        print(f"  {sum(m['ok'] for m in made)}/{len(owners)} sessions made", flush=True)
        r = await load.burst(f"nofile {soft}", [cell(o) for o in owners])
        show(r)
        await asyncio.sleep(1.0)
        whole = load.log_from(0)
        alive = server.proc.poll() is None
    finally:
        await load.http.close()
        server.stop()
    clear = sum(n for why, n in r["failed"].items() if re.match(r"HTTP 503 [a-z_]+$", why))
    # a 200 whose stream ends at once: `exit unknown` saying the server ran out of files
    in_stream = sum(n for why, n in r["failed"].items() if "run out of open files" in why)
    unclear = sum(r["failed"].values()) - clear - in_stream
    emfile = whole.count("Too many open files")
    warned = len(re.findall(r"\[W .*out of open files", whole))
    ok = unclear == in_stream == 0 and r["tracebacks"] <= TRACEBACK_STORM and alive
    return {
        "verdict": verdict(ok),
        "target": f"open files {NOFILE}, {NOFILE_CELLS} cells: refused cells get a clear 503, "
        f"no traceback storm (at most {TRACEBACK_STORM})",
        "figures": (
            f"server's soft limit {soft} (RemoteApp.open_files_limit "
            f"{'set' if trait else 'not in this server: measured as is'}); "
            f"{r['ok']}/{NOFILE_CELLS} ok, {clear} refused with a 503 and a reason, {in_stream} "
            f"with a 200 whose stream ends 'run out of open files', {unclear} failed otherwise "
            f"(all: {failures(r)}); fds max {r['fds_max']}; {r['tracebacks']} "
            f"Traceback lines in the burst's log ({whole.count('Traceback')} in the whole log), "
            f"'Too many open files' {emfile}x, {warned} warnings 'out of open files'; "
            f"server {'alive' if alive else 'DEAD'} after"
        ),
        "bursts": [r],
    }


async def warm_owners(load: Load, tag: str, count: int, nodes: list[dict]) -> list[str]:
    """`count` owners with a session each, made round-robin on `nodes`."""
    owners = [f"{tag}-o{i}" for i in range(count)]
    ids = [n["node_id"] for n in nodes]
    made = await load.warm([cell(o, 0, 0, node=ids[i % len(ids)]) for i, o in enumerate(owners)])
    print(f"  {sum(m['ok'] for m in made)}/{count} sessions made", flush=True)
    return owners


async def sc_https(run: Run) -> dict:
    """HTTPS_CELLS cells at once into existing sessions on 200 agents served over https
    (a second simulated-agents process with the run's own CA)."""
    sim, found = start_sim(NODES, run.tmp, tls=True)
    found["pid"] = sim.pid
    try:
        server = run.own("https", found["nodes"])
        load = Load(server, found)
        try:
            owners = await warm_owners(load, "https", HTTPS_CELLS, found["nodes"])
            r = await load.burst("https agents", [cell(o) for o in owners])
            show(r)
        finally:
            await load.http.close()
            server.stop()
    finally:
        sim.stdin.close()
        sim.wait(30)
    return {
        "verdict": verdict(r["ok"] == HTTPS_CELLS),
        "target": f"{HTTPS_CELLS} cells on https agents all succeed (issue: the 512-thread cap)",
        "figures": (
            f"{r['ok']}/{HTTPS_CELLS} ok (failed: {failures(r)}), TTFB p50 "
            f"{r['ttfb_p50_ms']:.0f} ms p99 {r['ttfb_p99_ms']:.0f} ms, server threads max "
            f"{r['threads_max']}, fds max {r['fds_max']}, CPU {r['server_cpu_s']} s"
        ),
        "bursts": [r],
    }


async def sc_slots(run: Run) -> dict:
    """SLOTS_CELLS cells at once on SLOTS_NODES nodes, each node's connection cap the
    server's own: all stream at once, none queued behind another (the agents' peak of
    concurrent streams), whatever the machine's load does to TTFB."""
    nodes = run.nodes[:SLOTS_NODES]
    server = run.own("slots", nodes, raise_cap=False)
    load = Load(server, run.sim)
    try:
        owners = await warm_owners(load, "slots", SLOTS_CELLS, nodes)
        r = await load.burst(f"slots N={SLOTS_NODES}", [cell(o) for o in owners])
        show(r)
        peak = (await load.sim_stats())["peak_streams"]
    finally:
        await load.http.close()
        server.stop()
    return {
        "verdict": verdict(r["ok"] == SLOTS_CELLS and peak >= SLOTS_CELLS),
        "target": f"{SLOTS_CELLS} cells on {SLOTS_NODES} nodes all stream at once (issue: 8 "
        "slots a node, p50 5.1 s)",
        "figures": (
            f"{r['ok']}/{SLOTS_CELLS} ok (failed: {failures(r)}), {peak} streams at once at the "
            f"agents, TTFB p50 {r['ttfb_p50_ms']:.0f} ms p99 {r['ttfb_p99_ms']:.0f} ms"
        ),
        "bursts": [r],
    }


def sc_store(run: Run | None) -> dict:
    """benchmarks/store_bench.py as it is: its output, its verdict."""
    tree = os.environ.get("SCALE_SERVER_TREE")
    env = {**os.environ, "PYTHONPATH": f"{tree}:{tree}/server_ext"} if tree else None
    where = Path(tree) / "benchmarks" if tree else HERE
    proc = subprocess.run(
        [sys.executable, str(where / "store_bench.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=max(SCENARIO_LIMIT, 600),
    )
    for text in proc.stdout.splitlines():
        print(f"  {text}", flush=True)
    found = re.search(r"^(PASS|FAIL): longest save ([\d.]+) ms", proc.stdout, re.M)
    new = re.search(r"^new: .*$", proc.stdout, re.M)
    if proc.returncode or not found:
        raise RuntimeError(f"store_bench.py exited {proc.returncode}: {proc.stderr[-500:]}")
    return {
        "verdict": found.group(1),
        "target": "1M execution rows: no store save waits more than 20 ms",
        "figures": f"longest save {found.group(2)} ms, sweep or not; {new.group(0) if new else ''}",
    }


def checkout(rev: str, where: Path) -> Path:
    """The files of one commit of this repository, for the server to run from."""
    where.mkdir()
    repo = HERE.parent
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", rev], capture_output=True, text=True
    ).stdout.strip()
    print(f"server at commit {sha} ({rev})", flush=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


RUNS = {
    "existing": sc_existing,
    "new": sc_new,
    "autostop": sc_autostop,
    "panels": sc_panels,
    "spread": sc_spread,
    "hung": sc_hung,
    "nofile": sc_nofile,
    "https": sc_https,
    "slots": sc_slots,
}
SHARED = ("existing", "new", "autostop", "panels", "spread")  # run first, on one server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS), help=",".join(SCENARIOS))
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--server-commit",
        help="run the server (and store_bench's store) from this commit of the repository "
        "(git archive into the run's temporary folder), not from the working tree",
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"no scenario {sorted(unknown)}; there are {', '.join(SCENARIOS)}")
    raise_open_files()
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="jr-scale-bench-"))
    if args.server_commit:
        os.environ["SCALE_SERVER_TREE"] = str(checkout(args.server_commit, tmp / "tree"))
    print(f"server from {os.environ.get('SCALE_SERVER_TREE') or 'the working tree'}", flush=True)
    sim = found = None
    if set(chosen) - {"store"}:
        sim, found = start_sim(NODES, tmp)
        found["pid"] = sim.pid
    run = Run(tmp, found) if found else None
    results: dict[str, dict] = {}
    order = [n for n in SHARED if n in chosen] + [n for n in SCENARIOS if n not in SHARED]
    try:
        for name in (n for n in order if n in chosen):
            if name not in SHARED and run is not None:
                run.close_shared()
            print(f"== {name}", flush=True)
            t0 = time.perf_counter()
            try:
                if name == "store":
                    r = sc_store(run)
                else:
                    r = asyncio.run(asyncio.wait_for(RUNS[name](run), SCENARIO_LIMIT))
            except Exception as exc:  # noqa: BLE001 - one scenario's error ends only it
                traceback.print_exc()
                r = {"verdict": "ERROR", "target": "", "figures": f"{type(exc).__name__}: {exc}"}
            r.update(scenario=name, seconds=round(time.perf_counter() - t0, 1))
            print(f"  {r['verdict']} {name}: {r['figures']} ({r['seconds']} s)", flush=True)
            results[name] = r
    finally:
        if run is not None:
            run.close_shared()
        if sim is not None:
            sim.stdin.close()
            sim.wait(30)
    took = time.perf_counter() - started
    over = ", https agents" if TLS else ""
    print(
        f"\nSUMMARY (N={NODES}{over}; {took:.0f} s in all; {os.cpu_count()} cores, load average "
        f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)",
        flush=True,
    )
    for name in (n for n in SCENARIOS if n in results):
        r = results[name]
        print(f"{r['verdict']:<5} {name:<9} target: {r['target']}\n{'':<16}{r['figures']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    sys.exit(0 if all(r["verdict"] == "PASS" for r in results.values()) else 1)


if __name__ == "__main__":
    main()
