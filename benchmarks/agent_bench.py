"""Agent speed against Docker itself, measured in one run on one warm container.

1. Latency of `echo hi`: through the agent (HTTP + NDJSON stream into a warm session
   container) against docker-py `exec_run` and the `docker exec` CLI on the same container.
   Target: agent <= 1.3x docker-py exec_run.
2. Throughput of 200 MB of output: through the agent to a client that decodes every event,
   against a raw docker-py exec stream. Target: >= 50 %, agent memory growth < 50 MB.
"""

from __future__ import annotations

import json
import os
import platform
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
from processes import BUSYBOX, AgentProcess  # noqa: E402

N = int(os.environ.get("BENCH_N", "60"))
MB = int(os.environ.get("BENCH_MB", "200"))
LINE = "0123456789" * 7
FLOOD = f"yes {LINE} | head -c {MB * 1_000_000}"


def main() -> None:
    dc = docker.from_env()
    agent = AgentProcess(tempfile.mkdtemp(prefix="jr-bench-")).start()
    client = agent.client
    session = client.create_session(session_id="bench", image=BUSYBOX, memory="512m")
    cid = session["container_id"]
    container = dc.containers.get(cid)
    try:

        def via_agent():
            events = list(
                client.execute_stream(uuid.uuid4().hex, session_id="bench", command="echo hi")
            )
            assert events[-1]["returncode"] == 0 and events[1]["data"] == "hi\n"

        def via_docker_py():
            code, out = container.exec_run(["sh", "-c", "echo hi"])
            assert code == 0 and out == b"hi\n"

        def via_cli():
            subprocess.run(
                ["docker", "exec", cid, "sh", "-c", "echo hi"], check=True, capture_output=True
            )

        lat = {
            "agent": median_ms(via_agent, N),
            "docker-py exec_run": median_ms(via_docker_py, N),
            "docker exec CLI": median_ms(via_cli, max(10, N // 3)),
        }

        def raw_stream() -> int:
            exec_id = dc.api.exec_create(cid, ["sh", "-c", FLOOD])["Id"]
            total = 0
            for out, err in dc.api.exec_start(exec_id, stream=True, demux=True):
                total += len(out or b"") + len(err or b"")
            return total

        def agent_stream() -> int:
            total = 0
            for event in client.execute_stream(uuid.uuid4().hex, session_id="bench", command=FLOOD):
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

        t0 = time.perf_counter()
        raw_bytes = raw_stream()
        raw_s = time.perf_counter() - t0
        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.perf_counter()
        agent_bytes = agent_stream()
        agent_s = time.perf_counter() - t0
        sampling.set()
        sampler.join()
        assert raw_bytes == agent_bytes == MB * 1_000_000, (raw_bytes, agent_bytes)
    finally:
        client.delete_session("bench")
        agent.stop()

    raw_rate, agent_rate = raw_bytes / raw_s / 1e6, agent_bytes / agent_s / 1e6
    growth = (peak[0] - rss_before) / 1e6
    ratio = lat["agent"] / lat["docker-py exec_run"]
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {psutil.cpu_count()} cores, "
        f"Python {platform.python_version()}, Docker {dc.version()['Version']}",
        "echo_hi_median_ms": {k: round(v, 2) for k, v in lat.items()},
        "agent_vs_docker_py_exec_run": round(ratio, 3),
        "stream_MB_per_s": {
            "raw docker-py exec stream": round(raw_rate, 1),
            "agent": round(agent_rate, 1),
        },
        "agent_vs_raw_stream": round(agent_rate / raw_rate, 3),
        "agent_rss_growth_MB": round(growth, 1),
    }
    print(f"machine: {result['machine']}")
    print(f"echo hi, median of {N}:")
    for name, ms in lat.items():
        print(f"  {name:<22} {ms:7.2f} ms")
    print(
        f"  agent / docker-py exec_run = {ratio:.2f}x   (target <= 1.30x) "
        f"{'OK' if ratio <= 1.3 else 'MISSED'}"
    )
    print(f"{MB} MB of output:")
    print(f"  raw docker-py exec stream {raw_rate:7.1f} MB/s")
    print(
        f"  through the agent         {agent_rate:7.1f} MB/s = "
        f"{agent_rate / raw_rate:.0%} of raw (target >= 50%) "
        f"{'OK' if agent_rate / raw_rate >= 0.5 else 'MISSED'}"
    )
    print(
        f"  agent RSS growth          {growth:7.1f} MB (target < 50 MB) "
        f"{'OK' if growth < 50 else 'MISSED'}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    requests.packages.urllib3.disable_warnings()
    main()
