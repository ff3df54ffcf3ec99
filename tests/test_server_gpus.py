"""GPU work placed by the pool, with a real server and real agents: one with a configured
inventory of two GPUs (--gpu-mode env, whose containers start without NVIDIA's runtime),
one with none. GPU work goes only where the GPUs are free; a request no node could ever
take is a 400, one whose GPUs are held a clear refusal naming the holders."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError

from conftest import BUSYBOX
from jupyter_remote.kernel.api import RemoteDockerEnvironment, RemoteEnvironment
from server_fixtures import FAST, api, execute, healthy, jp_server_config, remote_started, until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]

CALM = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100")


@pytest.fixture
def agents(make_agent):
    with_gpus = make_agent(
        host="127.0.0.2", extra=(*CALM, "--AgentApp.gpus_visible=0,1", "--gpu-mode", "env")
    )
    return [with_gpus, make_agent(host="127.0.0.3", extra=CALM)]


@pytest.fixture
def remote_config(agents, tmp_path):
    nodes = [{"url": a.url, "token": a.token, "node_id": a.node_id} for a in agents]
    return {"nodes": nodes, "db_path": str(tmp_path / "remote.sqlite"), **FAST}


async def refused(jp_fetch, *path, body: dict) -> tuple[int, dict]:
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("remote", "api", *path, method="POST", body=json.dumps(body))
    return err.value.code, json.loads(err.value.response.body)


async def test_gpu_work_goes_where_the_gpus_are_free(jp_fetch, agents):
    gpu_node, plain = agents
    await healthy(jp_fetch, 2)
    nodes = {n["node_id"]: n for n in (await api(jp_fetch, "nodes"))["nodes"]}
    assert nodes[gpu_node.node_id]["gpus"]["count"] == 2
    assert not (nodes[plain.node_id]["gpus"] or {}).get("count")

    for _ in range(3):  # never the node without GPUs, though it is as idle
        events = await execute(
            jp_fetch, command="echo $NVIDIA_VISIBLE_DEVICES", image=BUSYBOX, fresh=True, gpus=1
        )
        started = [e for e in events if e["event"] == "started"][0]
        assert started["node_id"] == gpu_node.node_id
        out = "".join(e.get("data", "") for e in events if e["event"] == "stdout")
        assert out.strip() in ("0", "1"), events

    code, error = await refused(
        jp_fetch, "executions", body={"command": "true", "fresh": True, "gpus": 3}
    )
    assert code == 400 and error["reason"] == "no_gpus", error
    assert gpu_node.node_id in error["message"] and "2 GPUs" in error["message"]

    # a kernel's session takes both GPUs; a second owner's GPU session is refused, by the
    # pool (from the node's last report) or by the agent (at once), naming who holds them
    first = {"owner": "owner-a", "image": BUSYBOX, "gpus": 2}
    made = await api(jp_fetch, "sessions", method="POST", body=first)
    assert made["node_id"] == gpu_node.node_id

    async def reported_held():
        node = await api(jp_fetch, "nodes", gpu_node.node_id)
        return node["gpus"]["free"] == 0

    await until(reported_held, timeout=15)
    code, error = await refused(
        jp_fetch, "sessions", body={"owner": "owner-b", "image": BUSYBOX, "gpus": 1}
    )
    assert code in (409, 503) and error["reason"] in ("no_gpus", "gpus_unavailable"), error
    assert "session:" in error["message"], error
    assert [s["owner"] for s in (await api(jp_fetch, "sessions"))["sessions"]] == ["owner-a"]


async def test_the_python_api_asks_for_gpus(jp_fetch, agents):
    gpu_node, _ = agents
    await healthy(jp_fetch, 2)

    def scripted():  # the blocking client, as a script uses it (the server is on this loop)
        with RemoteDockerEnvironment(image=BUSYBOX, gpus=[1]) as env:
            ran = env.execute("echo $NVIDIA_VISIBLE_DEVICES")
        batch = RemoteEnvironment("gpu-batch", image=BUSYBOX)
        return ran, batch.add("echo $NVIDIA_VISIBLE_DEVICES", gpus=1).submit(autostop=True)

    ran, job = await asyncio.to_thread(scripted)
    assert ran["returncode"] == 0 and ran["node_id"] == gpu_node.node_id
    assert ran["output"].strip() == "1"
    assert job["status"] == "completed" and job["nodes_used"] == [gpu_node.node_id]
