"""Placement by node labels (`on`): configured nodes with labels, real agents, a real server.

Work asked `on` some labels runs only on nodes with all of them, never elsewhere: a kernel's
session on a node without them is a 409, no node with them a 400 naming every node's
labels, matching nodes that cannot take work now a 503.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from tornado.httpclient import HTTPClientError

from conftest import BUSYBOX, free_port
from jupyter_remote.kernel.api import RemoteDockerEnvironment, RemoteEnvironment
from jupyter_remote_server.nodes.labels import check_labels
from server_fixtures import (
    FAST,
    agents,
    api,
    execute,
    healthy,
    jp_server_config,
    remote_started,
    until,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["agents", "jp_server_config", "remote_started"]

LABELS = [{"zone": "eu-1", "gpu": "a100"}, {"zone": "eu-1"}, {"zone": "us-2"}]
DEAD = {"zone": "mars"}  # on a configured node whose agent never answers


@pytest.fixture
def dead_url():
    return f"http://127.0.0.9:{free_port('127.0.0.9')}"


@pytest.fixture
def remote_config(agents, tmp_path, dead_url):
    nodes = [
        {"url": a.url, "token": a.token, "node_id": a.node_id, "labels": labels}
        for a, labels in zip(agents, LABELS, strict=True)
    ]
    nodes.append({"url": dead_url, "node_id": "never-answers", "labels": DEAD})
    return {"nodes": nodes, "db_path": str(tmp_path / "remote.sqlite"), **FAST}


async def refused(jp_fetch, *path, body: dict) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("remote", "api", *path, method="POST", body=json.dumps(body))
    return err.value.code, json.loads(err.value.response.body)


def exit_of(events: list[dict]) -> dict:
    return [e for e in events if e["event"] == "exit"][0]


def ran_on(events: list[dict]) -> str:
    return [e for e in events if e["event"] == "started"][0]["node_id"]


async def test_nodes_answer_their_labels(jp_fetch, agents):
    nodes = {n["node_id"]: n for n in (await api(jp_fetch, "nodes"))["nodes"]}
    assert [nodes[a.node_id]["labels"] for a in agents] == LABELS
    assert nodes["never-answers"]["labels"] == DEAD


async def test_fresh_cells_run_only_on_nodes_with_every_label(jp_fetch, agents):
    await healthy(jp_fetch, 3)
    for on, where in (
        ({"zone": "us-2"}, {agents[2].node_id}),
        ({"zone": "eu-1", "gpu": "a100"}, {agents[0].node_id}),
        ({"zone": "eu-1"}, {agents[0].node_id, agents[1].node_id}),
    ):
        for _ in range(3):
            events = await execute(jp_fetch, fresh=True, image=BUSYBOX, command="true", on=on)
            assert exit_of(events)["returncode"] == 0
            assert ran_on(events) in where, (on, ran_on(events))


async def test_no_node_with_the_labels_is_a_400_naming_each_nodes_labels(jp_fetch, agents):
    await healthy(jp_fetch, 3)
    eid = f"x-{uuid.uuid4().hex[:10]}"
    body = {"execution_id": eid, "fresh": True, "command": "true", "on": {"zone": "ap-9"}}
    code, err = await refused(jp_fetch, "executions", body=body)
    assert code == 400 and err["reason"] == "no_matching_node"
    assert "no node has zone=ap-9" in err["message"]
    assert f"{agents[0].node_id}: gpu=a100, zone=eu-1" in err["message"]
    assert "never-answers: zone=mars" in err["message"]
    assert (await api(jp_fetch, "executions"))["executions"] == []  # nothing kept
    code, err = await refused(jp_fetch, "jobs", body={"command": "true", "on": {"zone": "ap-9"}})
    assert code == 400 and err["reason"] == "no_matching_node"
    assert (await api(jp_fetch, "jobs"))["jobs"] == []


async def test_matching_nodes_that_cannot_take_work_are_a_503_never_another_node(jp_fetch):
    await healthy(jp_fetch, 3)
    code, err = await refused(
        jp_fetch, "executions", body={"fresh": True, "command": "true", "on": DEAD}
    )
    assert code == 503 and err["reason"] == "no_node"
    assert "no node with zone=mars is usable (never-answers:" in err["message"]


async def test_a_named_node_without_the_labels_is_a_409(jp_fetch, agents):
    await healthy(jp_fetch, 3)
    body = {"fresh": True, "command": "true", "node": agents[2].node_id, "on": {"zone": "eu-1"}}
    code, err = await refused(jp_fetch, "executions", body=body)
    assert code == 409 and err["reason"] == "labels_not_matching", err
    assert "does not have zone=eu-1 (it has zone=us-2)" in err["message"]


async def test_a_session_is_made_on_a_matching_node_and_never_moved(jp_fetch, agents):
    await healthy(jp_fetch, 3)
    owner = f"o-{uuid.uuid4().hex[:8]}"
    first = await execute(
        jp_fetch, owner=owner, image=BUSYBOX, command="echo kept > /tmp/f", on={"zone": "us-2"}
    )
    assert exit_of(first)["returncode"] == 0 and ran_on(first) == agents[2].node_id
    # later cells, with the same labels or none, go to the session
    again = await execute(jp_fetch, owner=owner, image=BUSYBOX, command="cat /tmp/f")
    assert ran_on(again) == agents[2].node_id
    assert [e["data"] for e in again if e["event"] == "stdout"] == ["kept\n"]
    body = {"owner": owner, "image": BUSYBOX, "command": "true", "on": {"zone": "eu-1"}}
    code, err = await refused(jp_fetch, "executions", body=body)
    assert code == 409 and err["reason"] == "session_elsewhere"
    assert f"lives on node {agents[2].node_id!r}, which does not have zone=eu-1" in err["message"]
    assert "%remote_cleanup" in err["message"]
    await jp_fetch("remote", "api", "sessions", owner, method="DELETE")


async def test_an_api_clients_session_goes_to_a_matching_node(jp_fetch, agents):
    await healthy(jp_fetch, 3)
    owner = f"c-{uuid.uuid4().hex[:8]}"
    resp = await jp_fetch(
        "remote",
        "api",
        "sessions",
        method="POST",
        body=json.dumps({"owner": owner, "image": BUSYBOX, "on": {"gpu": "a100"}}),
    )
    assert json.loads(resp.body)["node_id"] == agents[0].node_id
    await jp_fetch("remote", "api", "sessions", owner, method="DELETE")


async def test_a_jobs_tasks_run_only_on_matching_nodes(jp_fetch, agents):
    await healthy(jp_fetch, 3)
    tasks = [{"command": f"echo {i}"} for i in range(6)]
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={"image": BUSYBOX, "tasks": tasks, "on": {"zone": "eu-1"}},
    )
    assert job["on"] == {"zone": "eu-1"}

    async def ended():
        got = await api(jp_fetch, "jobs", job["job_id"])
        return got if got["status"] in ("completed", "failed") else None

    done = await until(ended, timeout=60)
    assert done["status"] == "completed"
    assert set(done["nodes_used"]) <= {agents[0].node_id, agents[1].node_id}


async def test_the_python_api_places_by_label(jp_fetch, agents):
    await healthy(jp_fetch, 3)

    def scripted():  # the blocking client, as a script uses it (the server is on this loop)
        with RemoteDockerEnvironment(image=BUSYBOX, on={"zone": "us-2"}) as env:
            ran = env.execute("echo hi")
        batch = RemoteEnvironment("labelled", image=BUSYBOX, on={"gpu": "a100"})
        return ran, batch.add("true").add("true").submit()

    ran, job = await asyncio.to_thread(scripted)
    assert ran["returncode"] == 0 and ran["node_id"] == agents[2].node_id
    assert job["on"] == {"gpu": "a100"}

    async def ended():
        got = await api(jp_fetch, "jobs", job["job_id"])
        return got if got["status"] in ("completed", "failed") else None

    done = await until(ended, timeout=60)
    assert done["status"] == "completed" and done["nodes_used"] == [agents[0].node_id]


def test_configured_labels_follow_the_protocols_rule():
    assert check_labels({"gpu.model": "a100", "com.example/rack": "r1"}, "n") == {
        "gpu.model": "a100",
        "com.example/rack": "r1",
    }
    for bad in ({"bad key": "x"}, {"zone": 5}, ["zone=eu-1"], {"": "x"}):
        with pytest.raises(Exception, match="labels of node n"):
            check_labels(bad, "n")
