"""Bursts spread over the pool: a placement counts from the moment its node is picked, and
new kernels' sessions are made at once, each waiting only for its own."""

from __future__ import annotations

import asyncio
import collections

import pytest

from conftest import BUSYBOX
from server_fixtures import (
    api,
    execute,
    jp_server_config,
    remote_config,
    remote_started,
    until,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_config", "remote_started"]


@pytest.fixture
def agents(make_agent):
    """Three agents never busy from a loaded test machine (a busy node is rightly avoided)."""
    calm = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100")
    return [make_agent(host=f"127.0.0.{i}", extra=calm) for i in (16, 17, 18)]


async def healthy(jp_fetch, count: int = 3) -> None:
    async def check():
        nodes = (await api(jp_fetch, "nodes"))["nodes"]
        return sum(n["state"] in ("healthy", "busy") for n in nodes) == count

    await until(check, timeout=30)


def exit_of(events: list[dict]) -> dict:
    return next(e for e in events if e["event"] == "exit")


async def test_a_burst_of_fresh_cells_spreads_over_the_nodes(jp_fetch):
    await healthy(jp_fetch)
    cells = 9
    runs = await asyncio.gather(
        *(execute(jp_fetch, image=BUSYBOX, fresh=True, command="sleep 1") for _ in range(cells))
    )
    assert all(exit_of(r)["status"] == "completed" for r in runs), runs
    rows = (await api(jp_fetch, "executions"))["executions"]
    per_node = collections.Counter(r["node_id"] for r in rows)
    mean = cells / 3
    assert max(per_node.values()) <= 2 * mean, per_node  # no node above twice the mean


@pytest.mark.parametrize("owners", [6])
async def test_new_owners_sessions_are_made_at_once_and_spread(jp_fetch, owners):
    await healthy(jp_fetch)
    runs = await asyncio.gather(
        *(
            execute(jp_fetch, owner=f"burst-{i}", image=BUSYBOX, command="hostname")
            for i in range(owners)
        )
    )
    assert all(exit_of(r)["status"] == "completed" for r in runs), runs
    sessions = (await api(jp_fetch, "sessions"))["sessions"]
    ours = [s for s in sessions if s["owner"].startswith("burst-")]
    assert len(ours) == owners, sessions
    per_node = collections.Counter(s["node_id"] for s in ours)
    assert max(per_node.values()) <= 2 * owners / 3, per_node
    # a second cell of each owner reuses its session: one per (owner, image), none twice
    again = await asyncio.gather(
        *(
            execute(jp_fetch, owner=f"burst-{i}", image=BUSYBOX, command="true")
            for i in range(owners)
        )
    )
    assert all(exit_of(r)["status"] == "completed" for r in again)
    assert (
        len(
            [
                s
                for s in (await api(jp_fetch, "sessions"))["sessions"]
                if s["owner"].startswith("burst-")
            ]
        )
        == owners
    )


async def test_housekeeping_leaves_a_streaming_cell_to_its_exit_event(jp_fetch, agents):
    """The 5 s settling round asked the node about every running execution, streams too."""
    import os
    import re
    import uuid

    await healthy(jp_fetch)
    eid = f"x-{uuid.uuid4().hex[:10]}"
    events = await execute(
        jp_fetch, execution_id=eid, image=BUSYBOX, fresh=True, command="sleep 12"
    )
    assert events[-1]["status"] == "completed", events[-1]
    asked = re.compile(rf"tornado\.access: \d+ GET /v1/executions/{eid} ")
    calls = 0
    for agent in agents:
        with open(os.path.join(agent.data_dir, "test-agent.log"), errors="replace") as fh:
            calls += sum(bool(asked.search(line)) for line in fh)
    assert calls == 0, f"the node was asked {calls} times about a cell whose stream was live"
