"""Busy is not broken: CPU and memory pressure are warnings, Docker and disk are critical."""

from __future__ import annotations

import subprocess
import sys
import time

BURN = "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass\n"


def _check(health: dict, name: str) -> dict:
    return next(c for c in health["checks"] if c["name"] == name)


def test_every_check_has_a_severity_value_and_threshold(client):
    health = client.health()
    assert health["status"] in ("healthy", "busy") and health["healthy"] is True
    assert isinstance(health["busy"], bool)
    severities = {c["name"]: c["severity"] for c in health["checks"]}
    assert severities == {
        "docker": "critical",
        "cpu": "warning",
        "memory": "warning",
        "disk": "critical",
    }
    for check in health["checks"]:
        assert {"ok", "value", "threshold", "message"} <= set(check)
    assert _check(health, "cpu")["threshold"] == 95 and _check(health, "disk")["threshold"] == 90


def test_a_pinned_cpu_makes_the_node_busy_and_still_usable(make_agent):
    node = make_agent(extra=("--cpu-max", "50"))
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
    try:
        deadline = time.monotonic() + 15
        health = node.client.health()
        while not health["busy"] and time.monotonic() < deadline:
            time.sleep(0.3)
            health = node.client.health()
    finally:
        for proc in burners:
            proc.kill()
            proc.wait(10)
    assert health["busy"] is True and health["healthy"] is True, health
    assert health["status"] == "busy"
    cpu = _check(health, "cpu")
    assert cpu["ok"] is False and cpu["severity"] == "warning" and cpu["value"] > 50
    assert "CPU" in health["message"] and "warning" in health["message"]


def test_memory_pressure_is_busy_and_a_full_disk_is_unhealthy(make_agent):
    calm_cpu = ("--cpu-max", "100")  # a loaded test machine must not fail the CPU check too
    busy = make_agent(extra=("--memory-max", "0", *calm_cpu)).client.health()
    assert (busy["status"], busy["busy"], busy["healthy"]) == ("busy", True, True)
    full = make_agent(extra=("--disk-max", "0", "--memory-max", "0", *calm_cpu)).client.health()
    assert (full["status"], full["busy"], full["healthy"]) == ("unhealthy", True, False)
    failed = {c["name"]: c for c in full["checks"] if not c["ok"]}
    assert set(failed) == {"disk", "memory"} and failed["disk"]["severity"] == "critical"
    assert "above the 0% limit" in failed["disk"]["message"] and "disk" in full["message"]
