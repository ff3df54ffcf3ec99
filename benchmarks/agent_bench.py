"""Agent speed against Docker itself, measured in one run on one warm container.

The session is of the python image, so its main process is the runner (docs/runner.md):
`command`/`python` cells go over the runner's socket, `argv` cells are a docker exec into
the same container (today's exec path), so both paths are measured side by side.

1. Latency of `echo hi` and `print(1)`: through the agent over the runner, through the agent
   over docker exec (argv), docker-py `exec_run` and the `docker exec` CLI, same container.
   Target: exec path <= 1.3x docker-py exec_run; runner path well below docker exec.
2. A fresh `print(1)` from the warm pool against `docker run --rm` of the same image.
3. Throughput of 200 MB of output: through the agent over the runner and over docker exec,
   to a client that decodes every event, against a raw docker-py exec stream. Target: runner
   path >= 1.0x raw, agent memory growth < 50 MB.
4. The runner's RSS in the idle session (its `status`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import docker
import psutil
import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import median_ms  # noqa: E402
from jupyter_remote.agent.runner_client import RunnerClient  # noqa: E402
from processes import PYTHON, AgentProcess  # noqa: E402

N = int(os.environ.get("BENCH_N", "30"))
FRESH_N = int(os.environ.get("BENCH_FRESH_N", "10"))
MB = int(os.environ.get("BENCH_MB", "200"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
LINE = "0123456789" * 7
FLOOD = f"yes {LINE} | head -c {MB * 1_000_000}"


def main() -> None:
    dc = docker.from_env()
    agent = AgentProcess(
        data_dir := tempfile.mkdtemp(prefix="jr-bench-"), extra=("--warm-images", PYTHON)
    ).start()
    client = agent.client
    session = client.create_session(session_id="bench", image=PYTHON, memory="512m")
    assert session["path"] == "runner", session
    cid = session["container_id"]
    container = dc.containers.get(cid)
    runner_dir = container.labels["jupyter-remote.runner-dir"]
    runner = RunnerClient(os.path.join(runner_dir, "runner.sock"))
    runner_rss = runner.status()["rss_bytes"] / 2**20
    try:

        def agent_cell(want: str, **body):
            def call():
                events = list(client.execute_stream(uuid.uuid4().hex, session_id="bench", **body))
                out = "".join(e["data"] for e in events if e["event"] == "stdout")
                assert events[-1]["returncode"] == 0 and out == want, events

            return call

        def docker_py(argv, want):
            def call():
                code, out = container.exec_run(argv)
                assert code == 0 and out == want

            return call

        def cli(argv):
            def call():
                subprocess.run(["docker", "exec", cid, *argv], check=True, capture_output=True)

            return call

        echo, pr = ["sh", "-c", "echo hi"], ["python3", "-c", "print(1)"]
        lat = {"echo hi": {}, "print(1)": {}}
        for cell, argv, want, body in (
            ("echo hi", echo, "hi\n", {"command": "echo hi"}),
            ("print(1)", pr, "1\n", {"python": "print(1)"}),
        ):
            lat[cell] = {
                "agent, runner path": median_ms(agent_cell(want, **body), N),
                "agent, exec path": median_ms(agent_cell(want, argv=argv), N),
                "docker-py exec_run": median_ms(docker_py(argv, want.encode()), N),
                "docker exec CLI": median_ms(cli(argv), max(10, N // 3)),
            }

        def wait_pool():
            deadline = time.monotonic() + 30
            while client.resources()["warm_pool"].get(PYTHON, 0) < 1:
                assert time.monotonic() < deadline, "the warm pool did not refill"
                time.sleep(0.05)

        fresh_times, run_times = [], []
        for i in range(FRESH_N + 2):
            wait_pool()
            t0 = time.perf_counter()
            events = list(client.execute_stream(uuid.uuid4().hex, image=PYTHON, python="print(1)"))
            took = time.perf_counter() - t0
            out = "".join(e["data"] for e in events if e["event"] == "stdout")
            assert events[-1]["returncode"] == 0 and out == "1\n", events
            t0 = time.perf_counter()
            subprocess.run(
                ["docker", "run", "--rm", "--network", "none", PYTHON, "python3", "-c", "print(1)"],
                check=True,
                capture_output=True,
            )
            if i >= 2:
                fresh_times.append(took * 1000)
                run_times.append((time.perf_counter() - t0) * 1000)
        fresh = {
            "agent fresh (warm pool)": statistics.median(fresh_times),
            "docker run --rm": statistics.median(run_times),
        }

        def raw_stream() -> int:
            exec_id = dc.api.exec_create(cid, ["sh", "-c", FLOOD])["Id"]
            total = 0
            for out, err in dc.api.exec_start(exec_id, stream=True, demux=True):
                total += len(out or b"") + len(err or b"")
            return total

        def agent_stream(**body) -> int:
            total = 0
            for event in client.execute_stream(uuid.uuid4().hex, session_id="bench", **body):
                if event["event"] == "stdout":
                    total += len(event["data"])
            return total

        proc = psutil.Process(agent.proc.pid)
        rss_before = proc.memory_info().rss
        peak = [rss_before]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.02)

        def rate(stream, **body) -> float:
            t0 = time.perf_counter()
            got = stream(**body)
            took = time.perf_counter() - t0
            assert got == MB * 1_000_000, got
            return got / took / 1e6

        # rounds alternate (raw, runner path, exec path), so load that comes and goes on
        # the box falls on all three alike; the medians are compared
        rates = {"raw": [], "runner": [], "exec": []}
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            for _ in range(ROUNDS):
                rates["raw"].append(rate(raw_stream))
                rates["runner"].append(rate(agent_stream, command=FLOOD))
                rates["exec"].append(rate(agent_stream, argv=["sh", "-c", FLOOD]))
        finally:
            sampling.set()
            sampler.join()
    finally:
        client.delete_session("bench")
        agent.stop()
        shutil.rmtree(data_dir, ignore_errors=True)  # ~2 GB of logs from the stream rounds

    raw_rate, agent_rate = statistics.median(rates["raw"]), statistics.median(rates["runner"])
    exec_rate = statistics.median(rates["exec"])
    growth = (peak[0] - rss_before) / 1e6
    ratio = lat["echo hi"]["agent, exec path"] / lat["echo hi"]["docker-py exec_run"]
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {psutil.cpu_count()} cores, "
        f"Python {platform.python_version()}, Docker {dc.version()['Version']}",
        "median_ms": {c: {k: round(v, 2) for k, v in d.items()} for c, d in lat.items()},
        "agent_exec_path_vs_docker_py_exec_run": round(ratio, 3),
        "fresh_median_ms": {k: round(v, 1) for k, v in fresh.items()},
        "stream_rounds_MB_per_s": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        "stream_MB_per_s": {
            "raw docker-py exec stream": round(raw_rate, 1),
            "agent, runner path": round(agent_rate, 1),
            "agent, exec path": round(exec_rate, 1),
        },
        "agent_runner_vs_raw_stream": round(agent_rate / raw_rate, 3),
        "agent_rss_growth_MB": round(growth, 1),
        "runner_idle_rss_MiB": round(runner_rss, 1),
    }
    print(f"machine: {result['machine']}")
    for cell, d in lat.items():
        print(f"{cell}, median of {N} (same container):")
        for name, ms in d.items():
            print(f"  {name:<22} {ms:7.2f} ms")
    print(
        f"  agent exec path / docker-py exec_run = {ratio:.2f}x   (target <= 1.30x) "
        f"{'OK' if ratio <= 1.3 else 'MISSED'}"
    )
    print(f"fresh print(1), median of {FRESH_N}:")
    for name, ms in fresh.items():
        print(f"  {name:<24} {ms:7.1f} ms")
    fr = fresh["agent fresh (warm pool)"] / fresh["docker run --rm"]
    print(f"  agent fresh / docker run --rm = {fr:.2f}x (target <= 0.25x)")
    print(f"{MB} MB of output, median of {ROUNDS} alternating rounds:")
    print(f"  raw docker-py exec stream      {raw_rate:7.1f} MB/s")
    print(f"  through the agent, exec path   {exec_rate:7.1f} MB/s = {exec_rate / raw_rate:.2f}x")
    print(
        f"  through the agent, runner path {agent_rate:7.1f} MB/s = "
        f"{agent_rate / raw_rate:.2f}x raw (target >= 1.0x) "
        f"{'OK' if agent_rate / raw_rate >= 1.0 else 'MISSED'}"
    )
    print(f"runner idle RSS {runner_rss:.1f} MiB (target < 15 MiB)")
    print(
        f"  agent RSS growth          {growth:7.1f} MB (target < 50 MB) "
        f"{'OK' if growth < 50 else 'MISSED'}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    requests.packages.urllib3.disable_warnings()
    main()
