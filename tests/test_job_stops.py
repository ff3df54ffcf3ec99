"""Stopping jobs whose stops are slow: one stop call in flight per task, never re-sent on top.

Real server, three real agents, real Docker. Each task ignores SIGTERM, so the agent's stop
waits its kill grace (STOP_SECONDS) before it kills: a stop call is in flight that long.
The stop calls are counted from the agents' own access logs; the first agent is reached
through a proxy that can cut its connections and notes when each stop call passed.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections import Counter

import pytest

from conftest import BUSYBOX
from processes import FAST, node_config
from server_fixtures import (
    CuttableProxy,
    api,
    execute,
    healthy,
    jp_server_config,
    remote_started,
    until,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]

STOP_SECONDS = 5  # the agents' --kill-grace: how long each stop call takes (as in issue 19)
STOP_BACKOFF = 2.0  # job_stops.STOP_BACKOFF: an unconfirmed stop is not asked again sooner
# 8 a node: without a cap their stop calls would hold all 8 work connections of a node
SERVICES = int(os.environ.get("JOB_STOPS_SERVICES", "24"))  # 64 for docs/performance.md
DEAF = "trap '' TERM; sleep 600"  # ignores SIGTERM: killed after the grace
STOP_CALL = re.compile(r"tornado\.access: \d+ POST /v1/jobs/([\w.-]+)/stop ")
STOP_REQUEST = re.compile(rb"POST /v1/jobs/([\w.-]+)/stop HTTP/1\.1")


class StopNotingProxy(CuttableProxy):
    """A cuttable proxy that notes (monotonic time, agent job id) of each stop call sent."""

    def __init__(self, *args) -> None:
        self.stops: list[tuple[float, str]] = []
        super().__init__(*args)

    def _pipe(self, src, dst) -> None:
        try:
            while data := src.recv(65536):
                for found in STOP_REQUEST.finditer(data):  # answers never hold a request line
                    self.stops.append((time.monotonic(), found.group(1).decode()))
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def agents(make_agent):
    extra = ("--kill-grace", str(STOP_SECONDS))
    return [make_agent(host=f"127.0.0.{i}", extra=extra) for i in (2, 3, 4)]


@pytest.fixture
def proxy(agents):
    noting = StopNotingProxy(agents[0].host, agents[0].port)
    yield noting
    noting.close()


@pytest.fixture
def remote_config(agents, proxy, tmp_path):
    nodes = node_config(agents)
    nodes[0]["url"] = proxy.url
    return {"nodes": nodes, "db_path": str(tmp_path / "remote.sqlite"), **FAST}


def stop_calls(agents, job_id: str) -> Counter:
    """POST .../stop calls each agent received for the job's tasks (agent job ids)."""
    calls: Counter = Counter()
    for agent in agents:
        with open(os.path.join(agent.data_dir, "test-agent.log"), errors="replace") as fh:
            for line in fh:
                found = STOP_CALL.search(line)
                if found and found.group(1).startswith(job_id + "."):
                    calls[found.group(1)] += 1
    return calls


async def test_autostop_of_slow_services_sends_one_stop_per_task(jp_fetch, agents):
    await healthy(jp_fetch)
    tasks = [{"name": f"svc-{i}", "command": DEAF, "service": True} for i in range(SERVICES)]
    tasks.append({"name": "batch", "command": "sleep 4; echo done"})
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={"name": "slow-stops", "image": BUSYBOX, "autostop": True, "tasks": tasks},
    )
    job_id = job["job_id"]

    async def stopping():
        return (await api(jp_fetch, "jobs", job_id))["status"] == "stopping"

    await until(stopping, timeout=120, interval=0.1)

    async def fresh(i: int) -> tuple[float, list[dict]]:
        t0 = time.monotonic()
        events = await execute(jp_fetch, image=BUSYBOX, command=f"echo fresh {i}")
        return time.monotonic() - t0, events

    # fresh cells while the services' stop calls are in flight
    timed = await asyncio.gather(*(fresh(i) for i in range(6)))
    cells = [events for _, events in timed]
    final = await api(
        jp_fetch, "jobs", job_id, "wait", params={"timeout": 120}, request_timeout=180
    )
    assert final["status"] == "completed", [t["status"] for t in final["tasks"]]
    assert [t["status"] for t in final["tasks"]] == ["stopped"] * SERVICES + ["completed"]
    for i, events in enumerate(cells):
        assert events[-1]["event"] == "exit" and events[-1]["returncode"] == 0, events[-3:]
        assert f"fresh {i}\n" in "".join(e.get("data", "") for e in events)
    # ...without waiting for a stop to end: stop calls hold at most half a node's connections
    assert max(took for took, _ in timed) < STOP_SECONDS, [took for took, _ in timed]

    await asyncio.sleep(0.5)  # an access line is written once its call has answered
    calls = stop_calls(agents, job_id)
    ended = final["finished_at"] - final["tasks"][-1]["finished_at"]
    print(f"\nstop calls per task ({SERVICES} services): {sorted(calls.values())}")
    print(f"total {sum(calls.values())}; the job ended {ended:.1f} s after its batch")
    print("fresh cells took", [round(took, 2) for took, _ in timed], "s")
    assert set(calls) == {f"{job_id}.{i}" for i in range(SERVICES)}  # each one asked...
    assert max(calls.values()) <= 2, calls  # ...at most twice (the budget)
    assert sum(calls.values()) <= SERVICES + 2, calls  # and the node confirmed nearly all at once


async def test_stop_asked_twice_while_in_flight_sends_one_call_per_task(jp_fetch, agents):
    await healthy(jp_fetch)
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={"image": BUSYBOX, "tasks": [{"command": DEAF} for _ in range(3)]},
    )
    job_id = job["job_id"]

    async def all_running():
        tasks = (await api(jp_fetch, "jobs", job_id))["tasks"]
        return all(t["status"] == "running" for t in tasks)

    await until(all_running, timeout=60)
    await asyncio.sleep(1.0)  # the containers are up, the shell's trap set
    t0 = asyncio.get_running_loop().time()
    first = asyncio.ensure_future(
        api(jp_fetch, "jobs", job_id, "stop", method="POST", body={}, request_timeout=60)
    )
    await asyncio.sleep(1.0)  # the first stop's calls are in flight now
    second = await api(jp_fetch, "jobs", job_id, "stop", method="POST", body={}, request_timeout=60)
    first = await first
    took = asyncio.get_running_loop().time() - t0
    # both answer once the node confirmed: every task stopped, in one grace, not one per task
    for answer in (first, second):
        assert answer["status"] == "stopped", [t["status"] for t in answer["tasks"]]
    assert STOP_SECONDS - 0.5 < took < 3 * STOP_SECONDS, took
    await asyncio.sleep(2.5)  # a stopper that re-asked would have asked again by now
    calls = stop_calls(agents, job_id)
    assert calls == Counter({f"{job_id}.{i}": 1 for i in range(3)}), calls


async def test_a_stop_cut_short_is_asked_again_once_after_a_backoff(jp_fetch, agents, proxy):
    await healthy(jp_fetch)
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={"image": BUSYBOX, "command": DEAF, "nodes": [agents[0].node_id]},
    )
    job_id, key = job["job_id"], f"{job['job_id']}.0"

    async def running():
        return (await api(jp_fetch, "jobs", job_id))["tasks"][0]["status"] == "running"

    await until(running, timeout=60)
    await asyncio.sleep(1.0)
    stopping = asyncio.ensure_future(
        api(jp_fetch, "jobs", job_id, "stop", method="POST", body={}, request_timeout=60)
    )
    await until(lambda: proxy.stops, timeout=10, interval=0.02)
    await asyncio.sleep(0.5)
    proxy.cut()  # the stop call in flight ends unanswered: the node has not confirmed
    cut_at = time.monotonic()
    answer = await stopping
    assert answer["status"] == "stopping"  # the answer does not wait for a retry
    final = await api(jp_fetch, "jobs", job_id, "wait", params={"timeout": 30}, request_timeout=60)
    assert final["status"] == "stopped", final["tasks"][0]
    # asked again once, not before the backoff, and confirmed by that call or the feed
    assert [k for _, k in proxy.stops] == [key, key], proxy.stops
    assert proxy.stops[1][0] - cut_at >= STOP_BACKOFF - 0.1, (proxy.stops, cut_at)
    await asyncio.sleep(STOP_BACKOFF + 1)
    assert len(proxy.stops) == 2  # nothing more once it stopped
