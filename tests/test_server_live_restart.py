"""kill -9 of an agent while a kernel's live-session cell runs, through the server: the cell
goes on in its container, the restarted agent re-attaches, and the server's record settles
to the true outcome with every line once."""

from __future__ import annotations

import asyncio
import json

import pytest

from processes import PYTHON
from server_fixtures import FAST, api, execute, jp_server_config, node_config, remote_started, until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]

CELL = "for i in $(seq 1 25); do echo line $i; sleep 0.2; done"


@pytest.fixture
def agents(make_agent):
    return [make_agent(host="127.0.0.8")]


@pytest.fixture
def remote_config(agents, tmp_path):
    return {"nodes": node_config(agents), "db_path": str(tmp_path / "remote.sqlite"), **FAST}


async def test_a_cell_survives_its_agents_kill_9_and_settles_completed(
    jp_fetch, jp_serverapp, agents
):
    agent = agents[0]

    async def usable():
        nodes = (await api(jp_fetch, "nodes"))["nodes"]
        return nodes[0]["state"] in ("healthy", "busy")

    await until(usable)
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    try:
        warm = await execute(jp_fetch, kernel_id=kernel_id, image=PYTHON, command="true")
        assert warm[-1]["status"] == "completed"
        eid = "live-restart-1"
        running = asyncio.ensure_future(
            execute(jp_fetch, execution_id=eid, kernel_id=kernel_id, image=PYTHON, command=CELL)
        )
        await asyncio.sleep(1.2)  # a few lines out
        await asyncio.to_thread(agent.kill9)
        events = await running
        assert [e["event"] for e in events].count("exit") == 1
        await asyncio.sleep(1.0)  # the cell goes on without its agent
        await asyncio.to_thread(agent.start)

        async def settled():
            record = await api(jp_fetch, "executions", eid)
            return record if record["status"] not in ("unknown", "running") else None

        record = await until(settled, timeout=40, interval=0.5)
        assert record["status"] == "completed" and record["returncode"] == 0, record
        resp = await jp_fetch("remote", "api", "executions", eid, "events")
        replay = [json.loads(line) for line in resp.body.decode().splitlines() if line.strip()]
        text = "".join(e["data"] for e in replay if e["event"] == "stdout")
        assert text == "".join(f"line {i}\n" for i in range(1, 26))
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)
