"""Soak: 10 cells/s for 10 minutes through a real Jupyter server into 4 sessions, with
retention on, and what the processes hold at the end compared with after the warm-up.

One agent and one `jupyter server` with the extension (real processes, loopback). Four
sessions made over the server's REST API (POST /remote/api/sessions, one per owner, python
image: cells go through the runner), then a paced stream of cells alternating shell and
Python, each POST /remote/api/executions read to its exit event. Sampled every 5 s:
agent and server RSS and open fds, the agent's data dir (du, without its log) and the
server's SQLite file (with its -wal). Pass: 0 failures, RSS growth < 10 % after the warm-up,
fds flat (+8 at most), the data dir back under the cap after every retention pass (over it
by at most one pass interval of cells), the SQLite file flat over the second half and within
4x the store's cap.

    benchmarks/run.sh soak                  # 10 minutes
    SOAK_SECONDS=60 benchmarks/run.sh soak  # a short try
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from processes import AgentProcess, data_dir_bytes  # noqa: E402
from server_process import ServerProcess  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "10"))
WARMUP = min(60.0, SECONDS / 5)
SAMPLE_EVERY = 5.0
PYTHON = "jupyter-remote/python:local"
SESSIONS = 4
# Retention: small enough that it works all through the run, not only at its end.
AGENT_CAP = 4_000_000
AGENT_POLICY = {"max-bytes": AGENT_CAP, "max-age": 120, "min-age": 5, "interval": 2}
# A pass brings the data dir under the cap; until the next one it grows by what arrives.
RECORD_MOST = 16 << 10
AGENT_BOUND = AGENT_CAP + RATE * AGENT_POLICY["interval"] * RECORD_MOST
SERVER_CAP = 500_000
SERVER_POLICY = {
    "retention_max_bytes": SERVER_CAP,
    "retention_max_age": 120.0,
    "retention_min_age": 5.0,
    "retention_interval": 5.0,
}
# SQLite checkpoints its -wal once a commit takes it past 1000 frames (a 4 KiB page and a
# 24-byte header each); the file is then reused from its start, never truncated.
WAL_MOST = 1000 * (4096 + 24) + (256 << 10)


def file_bytes(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


class Sampler(threading.Thread):
    """Every SAMPLE_EVERY s: RSS and fds of both processes, data dir and SQLite sizes."""

    def __init__(self, agent: psutil.Process, server: psutil.Process, data_dir, db) -> None:
        super().__init__(daemon=True)
        self.procs = {"agent": agent, "server": server}
        self.data_dir, self.db = data_dir, db
        self.rows: list[dict] = []
        self.stop = threading.Event()

    def sample(self) -> dict:
        row = {"t": time.monotonic()}
        for name, proc in self.procs.items():
            row[f"{name}_rss"] = proc.memory_info().rss
            row[f"{name}_fds"] = proc.num_fds()
        row["data_dir"] = data_dir_bytes(self.data_dir)
        row["sqlite"] = file_bytes(self.db, Path(f"{self.db}-wal"))
        row["sqlite_db"] = file_bytes(self.db)
        return row

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            self.rows.append(self.sample())


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="jr-soak-"))
    (tmp / "agent").mkdir()
    extra = tuple(x for k, v in AGENT_POLICY.items() for x in (f"--retention-{k}", str(v)))
    agent = AgentProcess(str(tmp / "agent"), host="127.0.0.1", extra=extra).start()
    server = ServerProcess(tmp, [agent], **SERVER_POLICY).start()
    http = requests.Session()
    http.headers["Authorization"] = f"token {server.token}"
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=16)
    http.mount("http://", adapter)
    owners = [f"soak-{i}-{uuid.uuid4().hex[:6]}" for i in range(SESSIONS)]
    failures: list[str] = []
    latencies: list[float] = []
    sent = 0
    try:
        for owner in owners:
            resp = http.post(f"{server.url}/sessions", json={"owner": owner, "image": PYTHON})
            resp.raise_for_status()

        def cell(i: int) -> None:
            owner = owners[i % SESSIONS]
            body = {"execution_id": f"soak-{i:06d}-{uuid.uuid4().hex[:6]}", "owner": owner}
            body["image"] = PYTHON
            if i % 2:
                body["python"] = f"x = {i} * 2\nprint(x)"
                want = f"{i * 2}\n"
            else:
                body["command"] = f"echo {i}"
                want = f"{i}\n"
            t0 = time.perf_counter()
            try:
                resp = http.post(f"{server.url}/executions", json=body, timeout=120)
                events = [json.loads(line) for line in resp.content.splitlines() if line.strip()]
                out = "".join(e.get("data", "") for e in events if e["event"] == "stdout")
                if resp.status_code != 200 or events[-1].get("status") != "completed":
                    failures.append(f"{body['execution_id']}: {resp.status_code} {events[-1:]}")
                elif out != want:
                    failures.append(f"{body['execution_id']}: output {out!r}, want {want!r}")
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                failures.append(f"{body['execution_id']}: {exc!r}")
            latencies.append(time.perf_counter() - t0)

        sampler = Sampler(
            psutil.Process(agent.proc.pid),
            psutil.Process(server.proc.pid),
            agent.data_dir,
            tmp / "remote.sqlite",
        )
        start = time.monotonic()
        sampler.start()
        baseline = None
        with ThreadPoolExecutor(16) as pool:
            while (now := time.monotonic()) < start + SECONDS:
                if baseline is None and now >= start + WARMUP:
                    baseline = sampler.sample()
                due = start + sent / RATE
                if now < due:
                    time.sleep(min(due - now, 0.05))
                    continue
                pool.submit(cell, sent)
                sent += 1
            sending = time.monotonic() - start
        time.sleep(SAMPLE_EVERY)  # a last retention pass on both sides
        sampler.stop.set()
        sampler.join()
        end = sampler.sample()
        status = http.get(f"{server.url}/status").json()
    finally:
        for owner in owners:  # their containers outlive the agent's process otherwise
            try:
                http.delete(f"{server.url}/sessions/{owner}", timeout=60)
            except requests.RequestException as exc:
                print(f"could not remove {owner}'s session: {exc}")
        server.stop()
        agent.stop()
    rows = [r for r in sampler.rows if r["t"] >= baseline["t"]] + [end]

    def growth(name: str) -> float:
        return (end[f"{name}_rss"] - baseline[f"{name}_rss"]) / baseline[f"{name}_rss"] * 100

    fds = {n: [r[f"{n}_fds"] for r in rows] for n in ("agent", "server")}
    data_max = max(r["data_dir"] for r in sampler.rows + [end])
    sqlite_max = max(r["sqlite"] for r in sampler.rows + [end])
    sqlite_db_max = max(r["sqlite_db"] for r in sampler.rows + [end])
    mid = min(sampler.rows, key=lambda r: abs(r["t"] - (start + SECONDS / 2)))
    checks = {
        "failures == 0": not failures,
        "agent RSS growth < 10 %": growth("agent") < 10,
        "server RSS growth < 10 %": growth("server") < 10,
        "agent fds flat (+8)": max(fds["agent"]) <= fds["agent"][0] + 8,
        "server fds flat (+8)": max(fds["server"]) <= fds["server"][0] + 8,
        "data dir <= cap + one pass interval of cells": data_max <= AGENT_BOUND,
        "data dir <= cap after the last pass": end["data_dir"] <= AGENT_CAP,
        "sqlite file <= 4 x the records cap (pages, indexes)": sqlite_db_max <= 4 * SERVER_CAP,
        "sqlite file flat over the second half (+10 %), or still < 2x the cap": end["sqlite_db"]
        <= max(mid["sqlite_db"] * 1.1, 2 * SERVER_CAP),
        "sqlite -wal <= its checkpoint size": sqlite_max - sqlite_db_max <= WAL_MOST,
        "nothing live left in the server": status["executions"] == 0,
    }
    mib = 1 << 20
    print(
        f"cells: {sent} sent in {sending:.0f} s ({sent / sending:.2f}/s), {SESSIONS} sessions, "
        f"warm-up {WARMUP:.0f} s; failures {len(failures)}"
    )
    lat = sorted(latencies)
    print(
        f"latency: median {statistics.median(lat) * 1000:.1f} ms, "
        f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms"
    )
    for name in ("agent", "server"):
        print(
            f"{name}: RSS {baseline[f'{name}_rss'] / mib:.1f} -> "
            f"{end[f'{name}_rss'] / mib:.1f} MiB "
            f"({growth(name):+.1f} %), peak {max(r[f'{name}_rss'] for r in rows) / mib:.1f} MiB; "
            f"fds {fds[name][0]} -> {fds[name][-1]} (max {max(fds[name])})"
        )
    print(
        f"agent data dir: max {data_max / 1e6:.2f} MB, end {end['data_dir'] / 1e6:.2f} MB "
        f"(cap {AGENT_CAP / 1e6:.1f} MB; between passes up to {AGENT_BOUND / 1e6:.2f} MB)"
    )
    print(
        f"server sqlite: max {sqlite_max / 1e6:.2f} MB with -wal ({sqlite_db_max / 1e6:.2f} MB "
        f"without; {mid['sqlite_db'] / 1e6:.2f} MB at half time), end {end['sqlite'] / 1e6:.2f} MB "
        f"(cap {SERVER_CAP / 1e6:.1f} MB of records)"
    )
    print(f"server retention: {status.get('retention')}")
    for failure in failures[:10]:
        print("  failed:", failure)
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
