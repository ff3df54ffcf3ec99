"""The server extension's cost and its behaviour under load, measured in one run.

1. Median `echo hi` into a warm session: through a real `jupyter server` (auth, pool,
   proxy) against the agent alone. Target: the server adds <= 15 ms.
2. 64 concurrent executions over 3 agents chosen by the pool (fresh busybox containers):
   zero failures, and never more open connections from the server to a node than
   pool_maxsize (counted from the server process's sockets every 20 ms).
"""

from __future__ import annotations

import json
import os
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
from common import median_ms  # noqa: E402
from processes import BUSYBOX, AgentProcess  # noqa: E402
from server_process import ServerProcess  # noqa: E402

N = int(os.environ.get("BENCH_N", "60"))
CONCURRENT = int(os.environ.get("BENCH_CONCURRENT", "64"))
POOL_MAXSIZE = 10


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jr-server-bench-"))
    agents = [AgentProcess(str(tmp / f"agent{i}"), host=f"127.0.0.{i + 2}") for i in range(3)]
    for agent in agents:
        os.makedirs(agent.data_dir)
        agent.start()
    server = ServerProcess(tmp, agents).start()
    http = requests.Session()
    http.headers["Authorization"] = f"token {server.token}"
    first = agents[0]
    first.client.create_session(session_id="bench", image=BUSYBOX)
    try:

        def through_server():
            body = {
                "execution_id": uuid.uuid4().hex,
                "node": first.node_id,
                "session_id": "bench",
                "command": "echo hi",
            }
            lines = http.post(f"{server.url}/executions", json=body).content.splitlines()
            assert json.loads(lines[-1])["returncode"] == 0, lines

        def agent_alone():
            events = list(
                first.client.execute_stream(uuid.uuid4().hex, session_id="bench", command="echo hi")
            )
            assert events[-1]["returncode"] == 0

        alone, via = median_ms(agent_alone, N), median_ms(through_server, N)

        ports = {a.port: a.node_id for a in agents}
        proc = psutil.Process(server.proc.pid)
        peak = dict.fromkeys(ports.values(), 0)
        done = threading.Event()

        def count_connections():
            while not done.is_set():
                now = dict.fromkeys(ports.values(), 0)
                for conn in proc.net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port in ports and conn.status == "ESTABLISHED":
                        now[ports[conn.raddr.port]] += 1
                for node, count in now.items():
                    peak[node] = max(peak[node], count)
                time.sleep(0.02)

        counter = threading.Thread(target=count_connections)
        counter.start()

        def one(i: int) -> tuple[str, int]:
            with requests.Session() as s:
                s.headers["Authorization"] = f"token {server.token}"
                body = {
                    "execution_id": f"load-{i}-{uuid.uuid4().hex[:6]}",
                    "image": BUSYBOX,
                    "command": "sleep 0.5; echo done",
                }
                lines = s.post(
                    f"{server.url}/executions", json=body, timeout=300
                ).content.splitlines()
            first_event, last = json.loads(lines[0]), json.loads(lines[-1])
            return first_event.get("node_id", "?"), last["returncode"]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT) as pool:
            results = list(pool.map(one, range(CONCURRENT)))
        load_s = time.perf_counter() - t0
        done.set()
        counter.join()
    finally:
        server.stop()
        for agent in agents:
            try:
                for c in agent.client.sessions():
                    agent.client.delete_session(c["session_id"])
            finally:
                agent.stop()

    failures = sum(rc != 0 for _, rc in results)
    spread = {node: sum(n == node for n, _ in results) for node in peak}
    overhead = via - alone
    print(f"echo hi into a warm session, median of {N}:")
    print(f"  agent alone            {alone:7.2f} ms")
    print(f"  through jupyter server {via:7.2f} ms")
    print(
        f"  server adds            {overhead:7.2f} ms = {via / alone:.2f}x  (target <= 15 ms) "
        f"{'OK' if overhead <= 15 else 'MISSED'}"
    )
    print(f"{CONCURRENT} concurrent executions (fresh containers) over 3 agents in {load_s:.1f} s:")
    print(f"  failures {failures} (target 0) {'OK' if failures == 0 else 'MISSED'}")
    print(f"  executions per node {spread}")
    worst = max(peak.values())
    print(
        f"  most open connections server->node {peak} (pool_maxsize {POOL_MAXSIZE}) "
        f"{'OK' if worst <= POOL_MAXSIZE else 'MISSED'}"
    )
    print(
        json.dumps(
            {
                "agent_ms": round(alone, 2),
                "server_ms": round(via, 2),
                "overhead_ms": round(overhead, 2),
                "failures": failures,
                "per_node": spread,
                "peak_connections": peak,
                "load_seconds": round(load_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
