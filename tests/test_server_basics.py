"""The server extension against real agents: nodes, auth, selection, stickiness, kernels."""

from __future__ import annotations

import asyncio

from server_fixtures import (
    agents,
    execute,
    healthy,
    jp_server_config,
    remote_config,
    remote_started,
)

from conftest import BUSYBOX

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["agents", "jp_server_config", "remote_config", "remote_started"]


async def test_nodes_are_listed_with_resources_and_no_tokens(jp_fetch, agents):
    nodes = await healthy(jp_fetch)
    assert {n["node_id"] for n in nodes} == {a.node_id for a in agents}
    for node in nodes:
        assert node["cpu"]["count"] >= 1 and node["memory"]["total"] > 0
        assert "token" not in node and agents[0].token not in str(node)


async def test_explicit_node_and_least_loaded_choice(jp_fetch, agents):
    await healthy(jp_fetch)
    target = agents[1].node_id
    events = await execute(jp_fetch, node=target, image=BUSYBOX, command="echo hi")
    assert events[0]["node_id"] == target and events[-1]["returncode"] == 0, events
    busy = asyncio.ensure_future(
        execute(jp_fetch, node=agents[0].node_id, image=BUSYBOX, command="sleep 2")
    )
    await asyncio.sleep(0.5)
    chosen = [
        (await execute(jp_fetch, image=BUSYBOX, command="true"))[0]["node_id"] for _ in range(4)
    ]
    assert agents[0].node_id not in chosen
    await busy
