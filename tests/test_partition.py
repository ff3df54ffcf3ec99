"""Partitions: 8 agents, each in a network namespace of its own, behind one real server.

A link is cut with `ip link set down` mid-batch and mid-stream, then restored: lost tasks
are stopped on their node (output kept), nothing runs twice, an execution's outcome is
unknown and then settled to the truth, and no container is left; a server restarted while
a node is cut off reconciles its lost task from the store. Needs root and iproute2; under
CI=true their absence fails the module (see netns.need_netns).
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import time
from collections import Counter

import pytest
from netns import Link, NetnsAgent, free_subnet, need_netns

from conftest import BUSYBOX, RUN_ID, new_id, remove_containers
from processes import node_config
from server_fixtures import api, execute, healthy, jp_server_config, remote_started, until
from server_process import ServerProcess

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]

HOSTS = 8
TIMING = {"poll_interval": 0.5, "suspect_after": 2.0, "lost_after": 5.0}
SHORT = 12  # seconds the short tasks run
# lost_after + one poll (the server's own clock: marked lost / stream ended), with 0.6 s for
# an event loop shared with the test on 2 busy cores
LOST_WITHIN = TIMING["lost_after"] + TIMING["poll_interval"] + 0.6


@pytest.fixture(scope="module")
def hosts(docker_client, tmp_path_factory):
    """8 namespaces, each with a real agent on the shared Docker engine; all removed after."""
    need_netns()
    run, third = RUN_ID[:4], free_subnet()
    links: list[Link] = []
    agents: list[NetnsAgent] = []
    try:
        for i in range(HOSTS):
            links.append(Link(run, i, third).create())
            data = str(tmp_path_factory.mktemp(f"netns-agent{i}"))
            agents.append(NetnsAgent(data, links[-1]))
        for agent in agents:
            agent.launch()
        deadline = time.monotonic() + 60
        for agent in agents:
            agent.wait_ready(deadline)
        yield agents
    finally:
        for agent in agents:
            agent.stop()
            remove_containers(agent.containers(docker_client))
        for link in links:
            link.delete()


@pytest.fixture
def remote_config(hosts, tmp_path):
    return {"nodes": node_config(hosts), "db_path": str(tmp_path / "remote.sqlite"), **TIMING}


async def node_state(jp_fetch, node_id: str) -> str:
    return (await api(jp_fetch, "nodes", node_id))["state"]


async def job_of(jp_fetch, job_id: str) -> dict:
    return await api(jp_fetch, "jobs", job_id)


def creations(docker_client, since: float, job_id: str) -> Counter:
    """Containers Docker created for each agent job of `job_id` since then (its own count)."""
    events = docker_client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        decode=True,
        filters={"type": "container", "event": "create", "label": "jupyter-remote.kind=job"},
    )
    made = Counter()
    for event in events:
        name = event["Actor"]["Attributes"].get("jupyter-remote.job", "")
        if name.startswith(f"{job_id}."):
            made[name] += 1
    return made


def log_lines(hosts, agent_job_id: str) -> list[str]:
    """Every line of that agent job's output, on whichever hosts have it."""
    lines = []
    for host in hosts:
        path = os.path.join(host.data_dir, "jobs", agent_job_id, "task-0", "output.log")
        if os.path.exists(path):
            with open(path) as fh:
                lines += fh.read().splitlines()
    return lines


async def test_a_link_cut_mid_batch_loses_its_tasks_then_stops_them_on_reconnection(
    jp_fetch, hosts, docker_client
):
    await healthy(jp_fetch, HOSTS)
    since = time.time()
    long_task = {
        "command": "echo start 0; echo kept > /tmp/result.txt; sleep 300",
        "outputs": ["/tmp/result.txt"],
    }
    short = [{"command": f"echo start {i}; sleep {SHORT}; echo end {i}"} for i in range(1, 16)]
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={"name": "partition", "image": BUSYBOX, "tasks": [long_task, *short]},
        request_timeout=120,
    )
    job_id = job["job_id"]

    async def all_running():
        tasks = (await job_of(jp_fetch, job_id))["tasks"]
        return tasks if all(t["status"] == "running" for t in tasks) else None

    tasks = await until(all_running, timeout=60)
    assert len({t["node_id"] for t in tasks}) == HOSTS  # spread over every host
    victim = next(h for h in hosts if h.node_id == tasks[0]["node_id"])

    tasks = (await job_of(jp_fetch, job_id))["tasks"]  # what runs there at the cut
    victim.link.cut()
    cut_at = time.time()
    on_victim = [t["index"] for t in tasks if t["node_id"] == victim.node_id]
    assert on_victim[0] == 0 and all(tasks[i]["status"] == "running" for i in on_victim)
    try:

        async def victim_tasks_lost():
            tasks = (await job_of(jp_fetch, job_id))["tasks"]
            return all(tasks[i]["status"] == "lost" for i in on_victim)

        await until(victim_tasks_lost, timeout=LOST_WITHIN + 10, interval=0.1)
        marked = (await job_of(jp_fetch, job_id))["tasks"][0]["finished_at"]
        print(f"tasks marked lost {marked - cut_at:.2f} s after the cut")
        assert TIMING["lost_after"] - 2 * TIMING["poll_interval"] < marked - cut_at <= LOST_WITHIN
        assert await node_state(jp_fetch, victim.node_id) == "lost"

        final = await api(
            jp_fetch, "jobs", job_id, "wait", params={"timeout": 60}, request_timeout=90
        )
        statuses = {t["index"]: t["status"] for t in final["tasks"]}
        assert final["status"] == "degraded" and final["degraded"] is True, statuses
        assert [i for i, s in statuses.items() if s == "lost"] == on_victim
        assert all(s == "completed" for i, s in statuses.items() if i not in on_victim)
        assert final["notices"] == []  # nothing known yet about what the victim did
        # the short ones there have ended by now, unseen: the reconciliation finds them ended
        ends = max((tasks[i]["started_at"] for i in on_victim[1:]), default=0) + SHORT + 1
        await asyncio.sleep(max(0.0, ends - time.time()))
    finally:
        victim.link.restore()
    restored_at = time.monotonic()

    await until(lambda: _is_usable(jp_fetch, victim.node_id), timeout=15)
    print(f"node usable again {time.monotonic() - restored_at:.2f} s after the restore")

    async def reconciled():
        tasks = (await job_of(jp_fetch, job_id))["tasks"]
        return tasks if all(tasks[i].get("reconciled") for i in on_victim) else None

    tasks = await until(reconciled, timeout=30)
    print(f"lost tasks reconciled {time.monotonic() - restored_at:.2f} s after the restore")
    stopped = tasks[0]["reconciled"]
    assert stopped["outcome"] == "stopped" and stopped["node_status"] == "stopped"
    assert "still running there and was stopped" in stopped["message"]
    assert victim.node_id in stopped["message"] and "not re-run" in stopped["message"]
    for i in on_victim[1:]:  # the short one ended on its own while cut off
        ended = tasks[i]["reconciled"]
        assert ended["outcome"] == "ended" and ended["node_status"] == "completed", ended
        assert ended["returncode"] == 0
    assert all(tasks[i]["status"] == "lost" for i in on_victim)  # a final status stays

    job = await job_of(jp_fetch, job_id)
    assert job["status"] == "degraded"
    assert len(job["notices"]) == len(on_victim)  # told once per task
    await asyncio.sleep(1.0)
    assert (await job_of(jp_fetch, job_id))["notices"] == job["notices"]

    # the stopped task's output is kept and downloadable: its log and its saved file
    resp = await jp_fetch("remote", "api", "jobs", job_id, "logs", params={"task": 0})
    assert resp.body.decode().splitlines() == ["start 0"]
    resp = await jp_fetch("remote", "api", "jobs", job_id, "tasks", "0", "outputs")
    with tarfile.open(fileobj=io.BytesIO(resp.body)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("result.txt"))
        assert tar.extractfile(member).read() == b"kept\n"

    # the node takes work again, and the server hears of its end at once (its job feed
    # was not left hanging on the cut link)
    again_at = time.monotonic()
    again = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={"name": "again", "image": BUSYBOX, "nodes": [victim.node_id], "command": "true"},
    )
    again = await api(jp_fetch, "jobs", again["job_id"], "wait", params={"timeout": 30})
    print(f"a new job on the node done {time.monotonic() - again_at:.2f} s after its submit")
    assert again["status"] == "completed" and again["nodes_used"] == [victim.node_id]
    assert time.monotonic() - again_at < 10

    # nothing ran twice: one container per task, one "start" line per task, on one host
    made = creations(docker_client, since, job_id)
    assert made == Counter({f"{job_id}.{i}": 1 for i in range(16)}), made
    for i in range(16):
        assert log_lines(hosts, f"{job_id}.{i}").count(f"start {i}") == 1

    def left():
        return [
            c
            for h in hosts
            for c in h.containers(docker_client, kind="job")
            if c.labels.get("jupyter-remote.job", "").startswith(f"{job_id}.")
        ]

    await until(lambda: not left(), timeout=20)


async def test_a_link_cut_mid_stream_is_unknown_then_settled_to_the_truth(
    jp_fetch, hosts, docker_client
):
    await healthy(jp_fetch, HOSTS)
    host = hosts[3]
    eid = new_id("cut")
    running = asyncio.ensure_future(
        execute(
            jp_fetch,
            execution_id=eid,
            node=host.node_id,
            image=BUSYBOX,
            command="echo start; sleep 4; echo end; exit 3",
        )
    )

    def printed_start():  # in the agent's own event log: the command is under way
        try:
            return b'"start' in host.client.open_execution_events(eid).content
        except Exception:  # noqa: BLE001 - not there yet
            return False

    await until(lambda: asyncio.to_thread(printed_start), timeout=30)
    await asyncio.sleep(0.3)  # ...and its first line has reached the server
    host.link.cut()
    cut_at = time.time()
    try:
        events = await running
        record = await api(jp_fetch, "executions", eid)
        ended_after = record["finished_at"] - cut_at
        print(f"stream ended {ended_after:.2f} s after the cut")
        exits = [e for e in events if e["event"] == "exit"]
        assert len(exits) == 1 and exits[0] is events[-1]
        assert exits[0]["status"] == "unknown" and exits[0]["returncode"] == -1
        assert "turned lost" in exits[0]["message"] and "not re-sent" in exits[0]["message"]
        assert ended_after <= LOST_WITHIN
        assert "start" in "".join(e.get("data", "") for e in events)
        assert record["status"] == "unknown"
    finally:
        host.link.restore()
    restored_at = time.monotonic()

    async def settled():
        record = await api(jp_fetch, "executions", eid)
        return record if record["status"] != "unknown" else None

    record = await until(settled, timeout=30)
    print(f"settled {time.monotonic() - restored_at:.2f} s after the restore")
    assert record["status"] == "failed" and record["returncode"] == 3 and record["settled"]
    theirs = await asyncio.to_thread(host.client.execution, eid)
    assert (theirs["status"], theirs["returncode"]) == ("failed", 3)

    def left():
        return host.containers(docker_client, execution=eid)

    await until(lambda: not left(), timeout=20)


def test_a_lost_task_is_reconciled_by_a_server_restarted_while_its_node_was_cut_off(
    hosts, docker_client, tmp_path
):
    """The server stops during the partition: the next one reconciles from its store."""
    victim = hosts[6]
    first = ServerProcess(tmp_path, [victim], **TIMING).start()
    try:
        job_id = first.post("jobs", body={"image": BUSYBOX, "command": "echo start; sleep 300"})[
            "job_id"
        ]

        def status() -> str:
            return first.get("jobs", job_id)["tasks"][0]["status"]

        first.wait_for(lambda: status() == "running", 30)
        victim.link.cut()
        first.wait_for(lambda: status() == "lost", LOST_WITHIN + 10)
    finally:
        first.stop()  # while the node is still cut off: the next server reconciles
        victim.link.restore()
    second = ServerProcess(tmp_path, [victim], **TIMING).start()  # the same store
    try:
        second.wait_for(lambda: second.get("jobs", job_id)["tasks"][0].get("reconciled"), 30)
        job = second.get("jobs", job_id)
    finally:
        second.stop()
    task = job["tasks"][0]
    assert job["status"] == "degraded" and task["status"] == "lost"
    assert task["reconciled"]["outcome"] == "stopped" and len(job["notices"]) == 1
    assert log_lines(hosts, f"{job_id}.0") == ["start"]  # ran once, output kept
    assert not victim.containers(docker_client, job=f"{job_id}.0")


async def _is_usable(jp_fetch, node_id: str) -> bool:
    return await node_state(jp_fetch, node_id) in ("healthy", "busy")
