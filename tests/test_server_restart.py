"""A real `jupyter server` process killed and started again: its jobs are still there."""

from __future__ import annotations

import json
import time

import pytest
import requests

from conftest import BUSYBOX
from server_process import ServerProcess


@pytest.fixture
def server(tmp_path, make_agent):
    agents = [make_agent(host=f"127.0.0.{i}") for i in (6, 7, 8)]
    srv = ServerProcess(tmp_path, agents).start()
    yield srv
    srv.stop()


def test_jobs_survive_a_server_kill_9_with_right_statuses(server):
    quick = server.post("jobs", body={"name": "quick", "image": BUSYBOX, "command": "echo a"})
    slow = server.post(
        "jobs",
        body={
            "name": "slow",
            "image": BUSYBOX,
            "tasks": [{"command": "sleep 3; echo b"}, {"command": "sleep 3; exit 3"}],
        },
    )
    halted = server.post("jobs", body={"name": "halted", "image": BUSYBOX, "command": "sleep 60"})
    server.wait_for(lambda: server.get("jobs", quick["job_id"])["status"] == "completed", 20)
    server.wait_for(lambda: server.get("jobs", halted["job_id"])["status"] == "running", 20)
    assert server.post("jobs", halted["job_id"], "stop")["status"] == "stopped"
    server.wait_for(
        lambda: (
            server.get("jobs", slow["job_id"])["tasks_done"] == 0
            and server.get("jobs", slow["job_id"])["status"] == "running"
        ),
        20,
    )
    server.kill9()
    time.sleep(4)  # the slow tasks end while no server runs

    server.start()
    listed = {j["name"]: j for j in server.get("jobs")["jobs"]}
    assert set(listed) == {"quick", "slow", "halted"}
    assert listed["quick"]["status"] == "completed"
    assert listed["halted"]["status"] == "stopped"
    server.wait_for(lambda: server.get("jobs", slow["job_id"])["status"] == "failed", 20)
    final = server.get("jobs", slow["job_id"])
    assert [t["returncode"] for t in final["tasks"]] == [0, 3]
    assert server.get("jobs", slow["job_id"], "wait", timeout=1)["status"] == "failed"


def test_an_agent_joins_by_itself_with_the_join_token(tmp_path, make_agent):
    server = ServerProcess(tmp_path, [], join_token="join-me").start()
    try:
        with pytest.raises(requests.HTTPError) as refused:
            requests.post(
                f"{server.url}/nodes/join",
                json={"url": "http://127.0.0.9:1"},
                headers={"Authorization": "Bearer wrong"},
                timeout=10,
            ).raise_for_status()
        assert refused.value.response.status_code == 401
        agent = make_agent(
            host="127.0.0.9",
            extra=("--join", f"http://127.0.0.1:{server.port}", "--join-token", "join-me"),
        )
        server.wait_for(
            lambda: [n["state"] for n in server.get("nodes")["nodes"]] == ["healthy"], 30
        )
        node = server.get("nodes")["nodes"][0]
        assert node["node_id"] == agent.node_id and node["source"] == "join"
        assert agent.token not in json.dumps(server.get("nodes"))
    finally:
        server.stop()
