"""Health, resources, the seed-000 /execute endpoint, versioned API and unknown routes."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from conftest import new_id, run
from jupyter_remote.agent.client import AgentClient
from jupyter_remote.protocol.errors import BadRequest, NotFound, Unauthorized


def test_health_reports_each_check(client):
    health = client.health()
    assert health["healthy"] is True  # "busy" too when CPU or memory run hot: still usable
    assert health["status"] in ("healthy", "busy")
    assert {c["name"] for c in health["checks"]} == {"docker", "cpu", "memory", "disk"}
    assert all(c["message"] for c in health["checks"])


def test_thresholds_crossed_make_the_node_unhealthy_with_a_message(make_agent):
    node = make_agent(extra=("--disk-max", "0", "--memory-max", "0"))
    health = node.client.health()
    assert health["status"] == "unhealthy"
    failed = {c["name"]: c["message"] for c in health["checks"] if not c["ok"]}
    assert set(failed) == {"disk", "memory"}
    assert "above the 0% limit" in failed["disk"] and "disk" in health["message"]


def test_resources_count_running_executions_and_own_containers(agent, client, session):
    eid = new_id()
    t = threading.Thread(
        target=run,
        args=(client,),
        kwargs={
            "execution_id": eid,
            "session_id": session,
            "command": "while :; do :; done",
            "timeout": 30,  # cancelled below: long enough for a sample on a loaded machine
        },
    )
    t.start()
    deadline = time.monotonic() + 25
    res = client.resources()
    while time.monotonic() < deadline and not (
        res["executions"]["running"] >= 1
        and any(c["session_id"] == session and c["cpu_percent"] for c in res["own_containers"])
    ):
        time.sleep(0.3)
        res = client.resources()
    client.cancel(eid)
    t.join(30)
    assert res["cpu"]["count"] >= 1 and 0 <= res["cpu"]["percent"] <= 100
    assert res["memory"]["total"] > 0 and res["disk"]["total"] > 0
    assert len(res["load_avg"]) == 3 and res["docker"]["containers"] >= 1
    assert res["executions"]["running"] >= 1
    mine = [c for c in res["own_containers"] if c["session_id"] == session]
    assert mine and mine[0]["memory_bytes"] > 0 and mine[0]["memory_limit"] == 128 << 20
    assert mine[0]["cpu_percent"] > 0


def test_seed_000_execute_endpoint_answers_output_and_returncode(client):
    first = client.execute("echo appended >> /tmp/compat; cat /tmp/compat; echo e >&2", timeout=30)
    assert first["returncode"] == 0 and "appended\n" in first["output"]
    assert "e\n" in first["output"]
    again = client.execute("wc -l < /tmp/compat; exit 2", timeout=30)  # same default session
    assert again["returncode"] == 2 and again["output"].strip() == "1"
    slow = client.execute("sleep 10", timeout=1)
    assert slow["timed_out"] is True and "timed out" in slow["output"]
    with pytest.raises(BadRequest):
        client.execute("true", timeout=-1)


def test_versioned_api_and_unknown_routes(agent, client):
    assert client.info()["api_version"] == 1
    resp = requests.get(
        f"{agent.url}/v2/whatever", headers={"Authorization": f"Bearer {agent.token}"}
    )
    assert resp.status_code == 404 and "no such endpoint" in resp.json()["message"]
    with pytest.raises(NotFound):
        client.execution("never-ran")
    with pytest.raises(Unauthorized):
        AgentClient(agent.url).health()
