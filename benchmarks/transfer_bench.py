"""1 GB into and out of a session container: jupyter-remote (client -> server -> agent ->
the container's runner, or Docker's archive API for an image without python3) against
`docker cp` of the same file into the same container, in the same run. Target: ours >= 0.8x
docker cp's throughput each way. Both session kinds are measured: the python image (the
runner does the file work, the default kind of session) and busybox (Docker's archive API).

Rounds alternate ours and docker cp, and the medians are compared, so that load from other
work on a shared machine falls on both sides alike. The CPU seconds per GB that each
process spent (the client with its children, i.e. the docker CLI for docker cp; the
Jupyter server; the agent; dockerd with its tar helpers; the container's main process, which
is the runner in a runner session) say where the time goes, whatever
the load. BENCH_MB (1024) sets the size, BENCH_ROUNDS (3) the rounds, BENCH_IMAGES the
images (comma-separated; default: the python image, then busybox).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from jupyter_remote.kernel.api import RemoteDockerEnvironment  # noqa: E402
from stack import Stack  # noqa: E402

BUSYBOX = "jupyter-remote/busybox:local"
PYTHON = "jupyter-remote/python:local"
IMAGES = os.environ.get("BENCH_IMAGES", f"{PYTHON},{BUSYBOX}").split(",")
MB = int(os.environ.get("BENCH_MB", "1024"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """Wall time and each process's CPU time over one call, kept per label."""

    def __init__(self, procs: dict[str, psutil.Process]) -> None:
        self.procs = procs
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[dict[str, float]]] = {}

    def __call__(self, label: str, fn) -> None:
        before = {name: _cpu(p) for name, p in self.procs.items()}
        start = time.perf_counter()
        fn()
        self.wall.setdefault(label, []).append(time.perf_counter() - start)
        used = {name: _cpu(p) - before[name] for name, p in self.procs.items()}
        self.cpu.setdefault(label, []).append(used)

    def rate(self, label: str) -> float:
        return MB / statistics.median(self.wall[label])

    def cpu_per_gb(self, label: str) -> dict[str, float]:
        runs = self.cpu[label]
        return {n: statistics.median(r[n] for r in runs) * 1024 / MB for n in self.procs}


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="jr-transfer-bench-")
    src = os.path.join(tmp, "big.bin")
    with open(src, "wb") as fh:
        block = os.urandom(1 << 20)
        for i in range(MB):
            fh.write(hashlib.sha256(block + i.to_bytes(4, "big")).digest() * 32768)
    stack = Stack().start()
    os.environ.update(stack.env)
    meters = {}
    try:
        for image in IMAGES:
            meters[image] = _measure(stack, image, src, tmp)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for image, (meter, path) in meters.items():
        _report(meter, image, path)


def _measure(stack, image: str, src: str, tmp: str):
    with RemoteDockerEnvironment(image=image) as env:
        env.execute("true")
        cid = _container(env)
        agent = next(a for a in stack.agents if a.node_id == env.session["node_id"])
        path = _path_of(agent, cid)
        meter = Meter(
            {
                "client": psutil.Process(),
                "server": psutil.Process(stack.server.proc.pid),
                "agent": psutil.Process(agent.proc.pid),
                "dockerd": _dockerd(),
                "container": _main_process(cid),  # the runner, in a runner session
            }
        )
        os.makedirs(os.path.join(tmp, "ours"), exist_ok=True)
        os.makedirs(os.path.join(tmp, "cp"), exist_ok=True)
        for i in range(ROUNDS):
            steps = [
                ("ours in", lambda: env.put(src, "/tmp/ours.bin", progress=False)),
                ("cp in", lambda: _cp(src, f"{cid}:/tmp/cp.bin")),
                ("ours out", lambda: env.get("/tmp/ours.bin", f"{tmp}/ours", progress=False)),
                ("cp out", lambda: _cp(f"{cid}:/tmp/cp.bin", f"{tmp}/cp/")),
            ]
            if i % 2:  # docker cp first every other round
                steps = [steps[1], steps[0], steps[3], steps[2]]
            for label, fn in steps:
                meter(label, fn)
            env.execute("rm -f /tmp/ours.bin /tmp/cp.bin")
            for name in ("ours/ours.bin", "cp/cp.bin"):
                assert os.path.getsize(os.path.join(tmp, name)) == MB << 20
                os.remove(os.path.join(tmp, name))
    return meter, path


def _main_process(cid: str) -> psutil.Process:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}}", cid], capture_output=True, text=True
    )
    return psutil.Process(int(out.stdout.strip()))


def _path_of(agent, cid: str) -> str:
    """ "runner" or "exec": how the agent reaches this session (and so who moves files)."""
    for session in agent.client.sessions():
        if session["container_id"].startswith(cid):
            return session["path"]
    return "?"


def _report(meter: Meter, image: str, path: str) -> None:
    who = "the runner" if path == "runner" else "Docker's archive API"
    print(f"\n{MB} MB, one file, session container {image} ({path} path: {who} moves the files)")
    print(f"loopback, {os.cpu_count()} CPUs")
    print(f"median of {ROUNDS} rounds, ours and docker cp alternating")
    head = f"{'direction':<10}{'ours MB/s':>12}{'docker cp MB/s':>16}{'ratio':>8}"
    print(f"{head}   rounds (ours/cp MB/s)")
    for way in ("in", "out"):
        ours, cp = meter.rate(f"ours {way}"), meter.rate(f"cp {way}")
        rounds = " ".join(
            f"{MB / a:.0f}/{MB / b:.0f}"
            for a, b in zip(meter.wall[f"ours {way}"], meter.wall[f"cp {way}"], strict=True)
        )
        print(f"{way:<10}{ours:>12.0f}{cp:>16.0f}{ours / cp:>8.2f}   {rounds}")
    print("CPU seconds per GB (median), by process:")
    print(f"{'':<10}" + "".join(f"{n:>10}" for n in meter.procs) + f"{'total':>10}")
    for label in ("ours in", "cp in", "ours out", "cp out"):
        used = meter.cpu_per_gb(label)
        print(
            f"{label:<10}"
            + "".join(f"{v:>10.2f}" for v in used.values())
            + f"{sum(used.values()):>10.2f}"
        )


def _cp(src: str, dst: str) -> None:
    subprocess.run(["docker", "cp", "-q", src, dst], check=True)


def _dockerd() -> psutil.Process:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "dockerd":
            return proc
    raise SystemExit("no dockerd process on this machine: its CPU cannot be measured")


def _container(env) -> str:
    name = env.session["session_id"]
    out = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"name={name}"], capture_output=True, text=True
    )
    return out.stdout.split()[0]


if __name__ == "__main__":
    main()
