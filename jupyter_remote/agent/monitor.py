"""Node health and resources, sampled on a thread so requests never wait for psutil or Docker."""

from __future__ import annotations

import logging
import os
import threading
import time

import docker
import psutil

from jupyter_remote.agent import labels
from jupyter_remote.util.failures import log_failure

log = logging.getLogger("jupyter_remote.agent")


class ResourceMonitor:
    """Keeps the latest sample of the host and of this node's containers."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        node_id: str,
        disk_path: str,
        interval: float,
        cpu_max: float,
        memory_max: float,
        disk_max: float,
    ) -> None:
        self.client = client
        self.node_id = node_id
        self.disk_path = disk_path
        self.interval = interval
        self.thresholds = {"cpu": cpu_max, "memory": memory_max, "disk": disk_max}
        self.sample: dict = {}
        # NVML is read here, off the event loop; the Agent sets the reader and the indices
        self.gpu_reader = None
        self.gpu_indices: list[int] = []
        self.gpu_metrics: dict[int, dict] = {}  # index -> memory used/total, utilization
        self._prev_cpu: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-monitor", daemon=True)
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a bad sample must not end monitoring
                log_failure(log, "resource sampling failed")

    def refresh(self) -> None:
        """Take one sample of the host, the engine and this node's containers."""
        mem = psutil.virtual_memory()
        disk = psutil.disk_usage(self.disk_path)
        sample = {
            "sampled_at": time.time(),
            "cpu": {"percent": psutil.cpu_percent(interval=None), "count": psutil.cpu_count() or 1},
            "memory": {
                "total": mem.total,
                "available": mem.available,
                "used": mem.used,
                "percent": mem.percent,
            },
            "disk": {
                "path": self.disk_path,
                "total": disk.total,
                "used": disk.used,
                "free": disk.free,
                "percent": disk.percent,
            },
            "load_avg": list(os.getloadavg()),
        }
        try:
            info = self.client.api.info()
            sample["docker"] = {
                "ok": True,
                "version": info.get("ServerVersion"),
                "containers": info.get("Containers", 0),
                "containers_running": info.get("ContainersRunning", 0),
            }
            sample["own_containers"] = self._own_containers()
            sample["images"] = sorted(
                tag
                for image in self.client.api.images()
                for tag in image.get("RepoTags") or []
                if tag != "<none>:<none>"
            )
        except Exception as exc:  # noqa: BLE001 - any failure means the engine is unreachable
            sample["docker"] = {"ok": False, "error": str(exc)}
            sample["own_containers"] = []
            sample["images"] = []
        if self.gpu_reader is not None:
            self.gpu_metrics = {i: self.gpu_reader.metrics(i) for i in self.gpu_indices}
        self.sample = sample

    def _own_containers(self) -> list[dict]:
        out = []
        seen = set()
        for info in self.client.api.containers(filters=labels.node_filter(self.node_id)):
            cid = info["Id"]
            seen.add(cid)
            try:
                stats = self.client.api.stats(cid, stream=False, one_shot=True)
            except Exception:  # noqa: BLE001 - it ended between list and stats
                continue
            mem = stats.get("memory_stats") or {}
            cpu = stats.get("cpu_stats") or {}
            total = (cpu.get("cpu_usage") or {}).get("total_usage", 0)
            system = cpu.get("system_cpu_usage", 0)
            prev = self._prev_cpu.get(cid)
            self._prev_cpu[cid] = (total, system)
            percent = None
            if prev and system > prev[1]:
                ncpu = cpu.get("online_cpus") or psutil.cpu_count() or 1
                percent = round((total - prev[0]) / (system - prev[1]) * ncpu * 100, 2)
            out.append(
                {
                    "id": cid[:12],
                    "name": info["Names"][0].lstrip("/"),
                    "kind": info["Labels"].get(labels.KIND),
                    "session_id": info["Labels"].get(labels.SESSION),
                    "job_id": info["Labels"].get(labels.JOB),
                    "execution_id": info["Labels"].get(labels.EXECUTION),
                    "cpu_percent": percent,
                    "memory_bytes": mem.get("usage"),
                    "memory_limit": mem.get("limit"),
                }
            )
        self._prev_cpu = {k: v for k, v in self._prev_cpu.items() if k in seen}
        return out

    def health(self) -> dict:
        """Seed 001's checks, each with a severity.

        A failing `critical` check (Docker unreachable, disk full) makes the node unusable:
        `healthy` is false. A failing `warning` (CPU or memory pressure) makes it `busy`:
        still usable, since a node running hot is exactly when a user is working on it.
        """
        s = self.sample
        docker_state = s.get("docker", {})
        t = self.thresholds
        docker_ok = bool(docker_state.get("ok"))
        checks = [
            {
                "name": "docker",
                "ok": docker_ok,
                "severity": CRITICAL,
                "value": docker_ok,
                "threshold": True,
                "limit": None,
                "message": "Docker engine reachable"
                if docker_ok
                else f"Docker engine unreachable: {docker_state.get('error')}",
            },
            _threshold("cpu", "CPU", s["cpu"]["percent"], t["cpu"], WARNING),
            _threshold("memory", "memory", s["memory"]["percent"], t["memory"], WARNING),
            _threshold(
                "disk", f"disk ({self.disk_path})", s["disk"]["percent"], t["disk"], CRITICAL
            ),
        ]
        failing = [c for c in checks if not c["ok"]]
        healthy = not any(c["severity"] == CRITICAL for c in failing)
        busy = any(c["severity"] == WARNING for c in failing)
        status = "unhealthy" if not healthy else "busy" if busy else "healthy"
        return {
            "status": status,
            "healthy": healthy,
            "busy": busy,
            "checks": checks,
            "sampled_at": s["sampled_at"],
            "message": "; ".join(f"{c['severity']}: {c['message']}" for c in failing) or "ok",
        }


WARNING = "warning"  # pressure: the node is busy but takes work
CRITICAL = "critical"  # the node cannot run work


def _threshold(name: str, label: str, value: float, limit: float, severity: str) -> dict:
    ok = value <= limit
    verdict = "within" if ok else "above"
    return {
        "name": name,
        "ok": ok,
        "severity": severity,
        "value": value,
        "threshold": limit,
        "limit": limit,
        "message": f"{label} use {value:.1f}% is {verdict} the {limit:g}% limit",
    }
