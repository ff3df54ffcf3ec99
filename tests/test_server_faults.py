"""Faults between the server and its agents: cut streams, kill -9, SIGSTOP, and autostop."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from conftest import BUSYBOX
from server_fixtures import (
    FAST,
    CuttableProxy,
    agents,
    api,
    execute,
    healthy,
    jp_server_config,
    node_config,
    remote_started,
    until,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["agents", "jp_server_config", "remote_started"]


@pytest.fixture
def proxy(agents):
    """The first agent is reached through a proxy that the test can cut."""
    cut = CuttableProxy(agents[0].host, agents[0].port)
    yield cut
    cut.close()


@pytest.fixture
def remote_config(agents, proxy, tmp_path):
    nodes = node_config(agents)
    nodes[0]["url"] = proxy.url
    return {"nodes": nodes, "db_path": str(tmp_path / "remote.sqlite"), **FAST}


def lines_in(agent, session: str, path: str) -> str:
    events = list(
        agent.client.execute_stream(
            f"count-{time.time_ns()}", session_id=session, command=f"wc -l < {path}"
        )
    )
    return "".join(e.get("data", "") for e in events).strip()


async def test_a_cut_stream_runs_the_command_once_and_says_what_happened(jp_fetch, agents, proxy):
    await healthy(jp_fetch)
    node = agents[0]
    await asyncio.to_thread(node.client.create_session, session_id="cut", image=BUSYBOX)
    running = asyncio.ensure_future(
        execute(
            jp_fetch,
            execution_id="cut-1",
            node=node.node_id,
            session_id="cut",
            command="echo ran >> /tmp/counter; echo working; sleep 1.5; echo done",
        )
    )
    await asyncio.sleep(0.7)
    proxy.cut()
    events = await running
    final = events[-1]
    assert final["event"] == "exit" and final["returncode"] == -1
    assert final["status"] == "unknown" and node.node_id in final["message"]
    assert "not re-sent" in final["message"] and "broke" in final["message"]
    assert sum(e["event"] == "exit" for e in events) == 1

    async def settled():
        record = await api(jp_fetch, "executions", "cut-1")
        return record if record["status"] != "unknown" else None

    record = await until(settled, timeout=20)
    assert record["status"] == "completed" and record["returncode"] == 0 and record["settled"]
    assert await asyncio.to_thread(lines_in, node, "cut", "/tmp/counter") == "1"


async def test_kill_9_of_an_agent_mid_batch_loses_its_task_and_the_rest_finish(jp_fetch, agents):
    await healthy(jp_fetch)
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={
            "name": "batch",
            "image": BUSYBOX,
            "parallelism": 3,
            "tasks": [{"command": f"sleep 2; echo task {i}"} for i in range(6)],
        },
    )
    await until(lambda: _running_on_all(jp_fetch, job["job_id"], 3))
    victim = agents[1]
    await asyncio.to_thread(victim.kill9)
    final = await api(
        jp_fetch, "jobs", job["job_id"], "wait", params={"timeout": 40}, request_timeout=60
    )
    statuses = [t["status"] for t in final["tasks"]]
    assert final["status"] == "degraded" and final["degraded"] is True, statuses
    lost = [t for t in final["tasks"] if t["status"] == "lost"]
    assert len(lost) == 1 and lost[0]["node_id"] == victim.node_id
    assert "not re-run" in lost[0]["message"]
    assert statuses.count("completed") == 5
    later = [t for t in final["tasks"] if t["started_at"] > lost[0]["started_at"] + 0.5]
    assert later and all(t["node_id"] != victim.node_id for t in later)


async def _running_on_all(jp_fetch, job_id: str, count: int) -> bool:
    job = await api(jp_fetch, "jobs", job_id)
    return len({t["node_id"] for t in job["tasks"] if t["status"] == "running"}) == count


async def test_sigstop_makes_a_node_suspect_then_lost_and_sigcont_brings_it_back(jp_fetch, agents):
    await healthy(jp_fetch)
    frozen = agents[2]

    async def state():
        nodes = (await api(jp_fetch, "nodes"))["nodes"]
        return next(n for n in nodes if n["node_id"] == frozen.node_id)["state"]

    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        await until(lambda: _is(state, "suspect"), timeout=10, interval=0.05)
        suspect_at = time.monotonic() - t0
        with pytest.raises(Exception) as err:  # work never goes to a suspect node
            await execute(jp_fetch, node=frozen.node_id, image=BUSYBOX, command="true")
        assert "suspect" in err.value.response.body.decode()
        await until(lambda: _is(state, "lost"), timeout=15, interval=0.05)
        lost_at = time.monotonic() - t0
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    assert FAST["suspect_after"] <= suspect_at + 0.5 <= FAST["suspect_after"] + 2
    assert FAST["lost_after"] <= lost_at + 0.5 <= FAST["lost_after"] + 2
    await until(lambda: _is(state, "healthy"), timeout=15)
    events = await execute(jp_fetch, node=frozen.node_id, image=BUSYBOX, command="echo back")
    assert events[-1]["returncode"] == 0


async def _is(state, wanted: str) -> bool:
    return await state() == wanted


async def test_autostop_stops_services_and_leaves_no_containers(jp_fetch, agents, docker_client):
    await healthy(jp_fetch)
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={
            "name": "with-service",
            "image": BUSYBOX,
            "autostop": True,
            "tasks": [
                {"name": "server", "command": "sleep 600", "service": True},
                {"name": "batch-1", "command": "sleep 1; echo one"},
                {"name": "batch-2", "command": "echo two"},
            ],
        },
    )
    t0 = time.monotonic()
    final = await api(
        jp_fetch, "jobs", job["job_id"], "wait", params={"timeout": 30}, request_timeout=60
    )
    assert final["status"] == "completed", [t["status"] for t in final["tasks"]]
    assert [t["status"] for t in final["tasks"]] == ["stopped", "completed", "completed"]
    assert time.monotonic() - t0 < 10

    def leftovers():
        return [c.name for a in agents for c in a.containers(docker_client, kind="job")]

    assert await asyncio.to_thread(leftovers) == []
    log = await jp_fetch("remote", "api", "jobs", job["job_id"], "logs", params={"task": 1})
    assert log.body == b"one\n"


async def test_wait_answers_within_100_ms_of_the_end(jp_fetch, agents):
    await healthy(jp_fetch)
    job = await api(jp_fetch, "jobs", method="POST", body={"image": BUSYBOX, "command": "sleep 1"})
    final = await api(jp_fetch, "jobs", job["job_id"], "wait", params={"timeout": 20})
    answered = time.time()
    assert final["status"] == "completed"
    task = final["tasks"][0]
    agent = next(a for a in agents if a.node_id == task["node_id"])
    theirs = await asyncio.to_thread(agent.client.job, f"{job['job_id']}.0")
    assert answered - theirs["tasks"][0]["finished_at"] < 0.1 + 0.05  # 50 ms for the reply


async def test_stop_ends_a_running_job(jp_fetch, agents, docker_client):
    await healthy(jp_fetch)
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={"image": BUSYBOX, "tasks": [{"command": "sleep 60"}, {"command": "sleep 60"}]},
    )
    await until(lambda: _running_on_all(jp_fetch, job["job_id"], 2))
    stopped = await api(jp_fetch, "jobs", job["job_id"], "stop", method="POST", body={})
    assert stopped["status"] == "stopped"
    assert [t["status"] for t in stopped["tasks"]] == ["stopped", "stopped"]
    assert json.dumps(stopped)  # a JSON model, as every answer
