"""The server at scale: simulated agents, one real Jupyter server, bursts of streaming cells.

One process of simulated agents (benchmarks/sim_agents.py: the agent API on N loopback
ports), a real `jupyter server` with the extension configured with the first N of them, and
an asyncio load generator here posting cells to `/remote/api/executions` all at once. A
cell streams 10 lines over 5 s. Scenarios, each against a baseline of the same run:

- `existing`: 1,000 cells at once into 1,000 owners' sessions that already exist (made by
  one quick cell each, placed round-robin on the nodes), at N = 1, 10 and 200 nodes (at 1
  and 10 the per-node connection cap is raised to fit their 1,000 and 100 cells a node);
- `new`: 150 owners with no session start a cell at once (the agent takes 0.25 s per
  session), at N = 200.

Per scenario: cells ok and failed (by reason), TTFB p50/p99, the server process's threads
and open fds (psutil, every 0.25 s during the burst), its CPU, and node state changes to
suspect or lost in its log. `SCALE_CELLS`, `SCALE_NEW`, `SCALE_NODES` change the sizes;
`SCALE_SERVER_TREE=DIR` runs the server from another checkout (its `server_ext` beside it);
`BENCH_TLS=1` has the agents serve https.
"""

from __future__ import annotations

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
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from processes import TLS, run_ca, tls_options  # noqa: E402
from server_process import ServerProcess  # noqa: E402

CELLS = int(os.environ.get("SCALE_CELLS", "1000"))
NEW = int(os.environ.get("SCALE_NEW", "150"))
NODES = int(os.environ.get("SCALE_NODES", "200"))
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


def start_sim(nodes: int, tmp: Path) -> tuple[subprocess.Popen, dict]:
    """The simulated agents; over https with BENCH_TLS=1 (the run's CA trusted from here on,
    by this process and the servers it starts)."""
    tls = tls_options(run_ca(), "127.0.0.1") if TLS else ()
    sim = subprocess.Popen(
        [sys.executable, str(HERE / "sim_agents.py"), "--nodes", str(nodes), *tls]
        + ["--lines", str(LINES), "--interval", str(INTERVAL), "--max-seconds", "600"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(tmp / "sim.log", "wb"),
    )
    return sim, json.loads(sim.stdout.readline())


def start_server(tmp: Path, nodes: list[dict]) -> ServerProcess:
    """A server with these nodes; each node's connection cap (`pool_maxsize`, 10: 8 streams
    at once) raised where fewer nodes would otherwise queue the burst's cells behind it."""
    tmp.mkdir()
    agents = [SimpleNamespace(**n) for n in nodes]
    per_node = -(-CELLS // len(nodes)) + 2  # two more for liveness calls
    server = ServerProcess(tmp, agents, pool_maxsize=max(10, per_node), **REMOTE)
    tree = os.environ.get("SCALE_SERVER_TREE")
    if tree:
        server.env["PYTHONPATH"] = f"{tree}:{tree}/server_ext"
    return server.start()


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

    async def burst(self, name: str, bodies: list[dict]) -> dict:
        """All the cells at once; what the server did meanwhile."""
        sampler = Sampler(self.server.proc.pid)
        sampler.sample()
        idle_threads, idle_fds = sampler.threads[0], sampler.fds[0]
        log_at = self.server.log.stat().st_size
        await self.http.post(f"{self.sim['control']}/control", json={"reset": True})
        sim, me = psutil.Process(self.sim["pid"]), psutil.Process()
        others = [sum(p.cpu_times()[:2]) for p in (sim, me)]
        load = os.getloadavg()[0]
        cpu0, t0 = sampler.cpu(), time.perf_counter()
        watch = asyncio.get_running_loop().create_task(sampler.run())
        results = await asyncio.gather(*(self.cell(b) for b in bodies))
        watch.cancel()
        wall, cpu = time.perf_counter() - t0, sampler.cpu() - cpu0
        others = [sum(p.cpu_times()[:2]) - o for p, o in zip((sim, me), others, strict=True)]
        async with self.http.get(f"{self.sim['control']}/stats") as resp:
            calls = (await resp.json())["calls"]
        polls = calls.get("GET /v1/health", 0) / self.server.expect_nodes / wall
        with open(self.server.log, "rb") as log:
            log.seek(log_at)
            text = log.read().decode("utf-8", "replace")
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
            "to_suspect": len(re.findall(r"-> suspect", text)),
            "to_lost": len(re.findall(r"-> lost", text)),
            "tracebacks": text.count("Traceback"),
            "nodes_used": len(per_node),
            "most_on_a_node": max(per_node.values(), default=0),
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


def main() -> None:
    raise_open_files()
    tmp = Path(tempfile.mkdtemp(prefix="jr-scale-bench-"))
    sim, found = start_sim(NODES, tmp)
    found["pid"] = sim.pid
    results = []
    try:
        for n in sorted({1, SMALL, NODES}):
            server = start_server(tmp / f"n{n}", found["nodes"][:n])
            try:
                print(f"== server with {n} nodes (log {server.log})", flush=True)
                results.append(asyncio.run(existing(server, found, found["nodes"][:n], f"n{n}")))
                show(results[-1])
                if n == NODES:
                    results.append(asyncio.run(new_sessions(server, found, "new")))
                    show(results[-1])
            finally:
                server.stop()
    finally:
        sim.stdin.close()
        sim.wait(30)
    by = {r["scenario"]: r for r in results}
    one, small, big = (by[f"existing N={n}"] for n in (1, SMALL, NODES))
    new = by[f"new sessions N={NODES}"]
    over = " (https agents)" if TLS else ""
    print(
        f"SUMMARY{over}: N={NODES}, {CELLS} cells: {big['ok']}/{CELLS} ok, TTFB p50 "
        f"{big['ttfb_p50_ms']:.0f} ms = {big['ttfb_p50_ms'] / one['ttfb_p50_ms']:.2f}x N=1's; "
        f"server threads max {big['threads_max']} at N={NODES} vs {small['threads_max']} at "
        f"N={SMALL} = {big['threads_max'] / small['threads_max']:.2f}x; "
        f"{NEW} new sessions at once: {new['ok']}/{NEW} ok, {new['to_suspect']} nodes "
        f"turned suspect",
        flush=True,
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
