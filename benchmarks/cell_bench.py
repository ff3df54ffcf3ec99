"""A cell's time as a notebook user feels it: execute_request to execute_reply in a real
kernel started by a real Jupyter server, against the peers measured in the same run.

- `%%remote echo hi` against ipyparallel's `%%px --block` running a subprocess echo on a
  local engine, and against the `docker exec` CLI (target: ours <= 1.0x ipyparallel);
- `%%remote --python print(1)` against `%%px --block print(1)`;
- `%%remote --fresh echo hi` against `docker run --rm` of the same image (target <= 0.25x).
Median of BENCH_N (30) after warm-up. ipyparallel is installed by benchmarks/run.sh.
BENCH_ONLY=python (or shell) measures only that pair, for iterating on one path; the default
is the full run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import requests
from jupyter_client import BlockingKernelClient

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from common import median_ms  # noqa: E402
from processes import PYTHON, AgentProcess  # noqa: E402
from server_process import ServerProcess  # noqa: E402

N = int(os.environ.get("BENCH_N", "30"))
ONLY = os.environ.get("BENCH_ONLY", "")  # "", "python" or "shell"
PAIRS = {
    "shell": ("%%remote echo hi", "%%px --block subprocess echo"),
    "python": ("%%remote --python print(1)", "%%px --block print(1)"),
}


class Kernel:
    """A kernel the server started, driven over its connection file."""

    def __init__(self, server: ServerProcess, runtime: Path) -> None:
        base = server.url.rsplit("/remote/api", 1)[0]
        self.headers = {"Authorization": f"token {server.token}"}
        self.base = base
        self.id = requests.post(
            f"{base}/api/kernels", json={"name": "python3"}, headers=self.headers, timeout=60
        ).json()["id"]
        self.kc = BlockingKernelClient(connection_file=str(runtime / f"kernel-{self.id}.json"))
        self.kc.load_connection_file()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str) -> dict:
        """Execute and wait for the reply; raise if the cell failed."""
        msg_id = self.kc.execute(code, store_history=False)
        while True:
            reply = self.kc.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        while self.kc.iopub_channel.msg_ready():  # keep iopub from piling up
            self.kc.get_iopub_msg(timeout=1)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {code!r}: {reply['content']}")
        return reply

    def close(self) -> None:
        self.kc.stop_channels()
        requests.delete(f"{self.base}/api/kernels/{self.id}", headers=self.headers, timeout=60)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jr-cell-bench-"))
    # the agent warms the image the fresh cell uses (its default image is busybox)
    agent = AgentProcess(str(tmp / "agent"), host="127.0.0.2", extra=("--warm-images", PYTHON))
    os.makedirs(agent.data_dir)
    agent.start()
    server = ServerProcess(tmp, [agent], default_image=PYTHON).start()
    kernel = Kernel(server, tmp / "runtime")
    engine = docker.from_env()
    box = engine.containers.run(PYTHON, "sleep infinity", detach=True, network_mode="none")
    results: dict[str, float] = {}
    try:
        kernel.run("%load_ext jupyter_remote")
        kernel.run(
            "import ipyparallel as ipp\n"
            "cluster = ipp.Cluster(n=1, log_level=40)\n"
            "rc = cluster.start_and_connect_sync()\n"
            "rc.wait_for_engines(1, timeout=60)\n"
            "rc[:].activate()\n"
        )
        cells = {
            "%%remote echo hi": "%%remote\necho hi",
            "%%px --block subprocess echo": "%%px --block\nimport subprocess\n"
            "subprocess.run(['echo', 'hi'], check=True)",
            "%%remote --python print(1)": "%%remote --python\nprint(1)",
            "%%px --block print(1)": "%%px --block\nprint(1)",
            "%%remote --fresh echo hi": f"%%remote --fresh --image {PYTHON}\necho hi",
        }
        for name, code in cells.items():
            if "--fresh" in name or (ONLY and name not in PAIRS[ONLY]):
                continue
            results[name] = median_ms(lambda code=code: kernel.run(code), N, warmup=3)
        if ONLY:
            return report(results, {f"{ONLY} vs ipyparallel": PAIRS[ONLY]})

        def wait_pool() -> None:
            """Untimed, as in agent_bench: a fresh cell takes the warm container the pool
            refilled in the background since the last one (a notebook's cells come seconds
            apart; 30 back-to-back fresh cells would outrun any pool's refill)."""
            deadline = time.monotonic() + 30
            while agent.client.resources()["warm_pool"].get(PYTHON, 0) < 1:
                assert time.monotonic() < deadline, "the warm pool did not refill"
                time.sleep(0.05)

        fresh = []
        for i in range(N + 3):
            wait_pool()
            t0 = time.perf_counter()
            kernel.run(cells["%%remote --fresh echo hi"])
            if i >= 3:
                fresh.append(time.perf_counter() - t0)
        results["%%remote --fresh echo hi"] = statistics.median(fresh) * 1000
        results["docker exec CLI"] = median_ms(
            lambda: subprocess.run(
                ["docker", "exec", box.id, "sh", "-c", "echo hi"], check=True, capture_output=True
            ),
            N,
            warmup=3,
        )
        results["docker run --rm"] = median_ms(
            lambda: subprocess.run(
                ["docker", "run", "--rm", "--network", "none", PYTHON, "sh", "-c", "echo hi"],
                check=True,
                capture_output=True,
            ),
            max(5, N // 3),
            warmup=1,
        )
    finally:
        try:
            kernel.run("cluster.stop_cluster_sync()")
        except Exception as exc:  # noqa: BLE001 - the cluster may never have started
            print(f"note: stopping the ipyparallel cluster: {exc}")
        kernel.close()
        box.remove(force=True)
        server.stop()
        agent.stop()
    report(
        results,
        {
            "shell vs ipyparallel": PAIRS["shell"],
            "python vs ipyparallel": PAIRS["python"],
            "shell vs docker exec CLI": ("%%remote echo hi", "docker exec CLI"),
            "fresh vs docker run --rm": ("%%remote --fresh echo hi", "docker run --rm"),
        },
    )


def report(results: dict[str, float], pairs: dict[str, tuple[str, str]]) -> None:
    """Print the medians and each pair's ratio, with its target where there is one."""
    ratios = {name: results[ours] / results[theirs] for name, (ours, theirs) in pairs.items()}
    print(f"cells through a real kernel and server, median of {N} (ms):")
    for name, ms in results.items():
        print(f"  {name:<32} {ms:8.1f}")
    targets = {
        "shell vs ipyparallel": 1.0,
        "python vs ipyparallel": 1.0,
        "fresh vs docker run --rm": 0.25,
    }
    for name, ratio in ratios.items():
        target = targets.get(name)
        verdict = "" if target is None else (" OK" if ratio <= target else f" (target <= {target})")
        print(f"  {name:<32} {ratio:8.2f}x{verdict}")
    load = open("/proc/loadavg").read().split()[:3]
    print(
        json.dumps(
            {"ms": results, "ratios": ratios, "n": N, "when": time.strftime("%F %T"), "load": load}
        )
    )


if __name__ == "__main__":
    main()
