"""Busy is not broken: CPU/memory pressure keeps a node usable; critical checks do not."""

from __future__ import annotations

import signal

import pytest
from tornado.httpclient import HTTPClientError

from conftest import BUSYBOX
from jupyter_remote.protocol.errors import Unavailable
from jupyter_remote_server.nodes.registry import state_of
from processes import FAST, node_config
from server_fixtures import api, execute, remote_started, until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["remote_started"]


@pytest.fixture
def trio(make_agent):
    """Real agents: one calm, one over its memory limit (busy), one over its disk limit."""
    return {
        # never busy, however hard other tests work this machine
        "calm": make_agent(host="127.0.0.2", extra=("--cpu-max", "100", "--memory-max", "100")),
        # CPU left out (cpu_max 100): a loaded test machine must not add a CPU warning
        "busy": make_agent(host="127.0.0.3", extra=("--AgentApp.memory_max=0", "--cpu-max", "100")),
        "broken": make_agent(host="127.0.0.4", extra=("--AgentApp.disk_max=0", "--cpu-max", "100")),
    }


@pytest.fixture
def jp_server_config(trio, tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_remote_server": True}},
        "RemoteApp": {
            "nodes": node_config(list(trio.values())),
            "db_path": str(tmp_path / "remote.sqlite"),
            **FAST,
        },
    }


async def states(jp_fetch) -> dict:
    return {n["node_id"]: n for n in (await api(jp_fetch, "nodes"))["nodes"]}


async def settled(jp_fetch, trio) -> dict:
    want = {"calm": "healthy", "busy": "busy", "broken": "unhealthy"}

    async def check():
        nodes = await states(jp_fetch)
        got = {k: nodes[a.node_id]["state"] for k, a in trio.items()}
        return nodes if got == want else None

    return await until(check, timeout=20)


async def test_a_busy_node_takes_work_and_says_why_it_is_busy(jp_fetch, trio):
    nodes = await settled(jp_fetch, trio)
    busy, broken = nodes[trio["busy"].node_id], nodes[trio["broken"].node_id]
    assert busy["warnings"] and "memory use" in busy["warnings"][0], busy
    assert busy["reason"] == busy["warnings"][0]
    assert broken["warnings"] == [] and "disk" in broken["reason"]
    assert nodes[trio["calm"].node_id]["warnings"] == []

    events = await execute(jp_fetch, node=trio["busy"].node_id, image=BUSYBOX, command="echo hot")
    assert events[-1]["returncode"] == 0, events
    with pytest.raises(HTTPClientError) as err:
        await execute(jp_fetch, node=trio["broken"].node_id, image=BUSYBOX, command="true")
    assert err.value.code == 503 and b"node_unavailable" in err.value.response.body


async def test_new_placements_prefer_a_healthy_node_and_fall_back_to_a_busy_one(jp_fetch, trio):
    await settled(jp_fetch, trio)
    chosen = {
        (await execute(jp_fetch, image=BUSYBOX, command="true"))[0]["node_id"] for _ in range(4)
    }
    assert chosen == {trio["calm"].node_id}
    await api(jp_fetch, "nodes", trio["calm"].node_id, method="DELETE")
    events = await execute(jp_fetch, image=BUSYBOX, command="echo fallback")
    assert events[0]["node_id"] == trio["busy"].node_id and events[-1]["returncode"] == 0
    status = await api(jp_fetch, "status")
    assert (status["healthy"], status["busy"], status["nodes"]) == (0, 1, 2)


async def test_answering_is_busy_or_unhealthy_but_never_silent(jp_fetch, jp_serverapp, trio):
    await settled(jp_fetch, trio)
    registry = jp_serverapp.web_app.settings["jupyter_remote_manager"].registry
    for name in ("calm", "busy", "broken"):
        assert registry.answering(trio[name].node_id).node_id == trio[name].node_id
    with pytest.raises(Unavailable):
        registry.usable(trio["broken"].node_id)

    frozen = trio["busy"]
    frozen.proc.send_signal(signal.SIGSTOP)
    try:

        async def suspect():
            return (await states(jp_fetch))[frozen.node_id]["state"] == "suspect"

        await until(suspect, timeout=10, interval=0.05)
        with pytest.raises(Unavailable) as err:
            registry.answering(frozen.node_id, " (a session's node)", "try later")
        assert err.value.reason == "node_unavailable" and err.value.status == 503
        assert "suspect" in err.value.message and err.value.message.endswith("try later")
        assert (await states(jp_fetch))[frozen.node_id]["warnings"] == []
    finally:
        frozen.proc.send_signal(signal.SIGCONT)


def check(name: str, ok: bool, severity: str | None = None) -> dict:
    out = {"name": name, "ok": ok, "message": f"{name} {'ok' if ok else 'failing'}"}
    return {**out, "severity": severity} if severity else out


@pytest.mark.parametrize(
    ("health", "state"),
    [
        # agents that report busy themselves
        ({"healthy": True, "busy": False, "checks": [check("cpu", True)]}, "healthy"),
        ({"healthy": True, "busy": True, "checks": [check("cpu", False, "warning")]}, "busy"),
        (
            {"healthy": False, "busy": True, "checks": [check("disk", False, "critical")]},
            "unhealthy",
        ),
        ({"healthy": True, "busy": False, "checks": [check("gpu", False, "warning")]}, "healthy"),
        # older agents: any failing check made them unhealthy; pressure is judged by name
        ({"healthy": False, "checks": [check("cpu", False), check("memory", False)]}, "busy"),
        ({"healthy": False, "checks": [check("cpu", False), check("docker", False)]}, "unhealthy"),
        ({"healthy": False, "checks": [], "message": "odd"}, "unhealthy"),
        ({"healthy": True, "checks": [check("docker", True)]}, "healthy"),
    ],
)
def test_state_of_a_health_answer(health, state):
    got, reason = state_of(health)
    assert got == state
    if state == "busy":
        assert "cpu failing" in reason and "docker" not in reason
    if state == "unhealthy" and health["checks"]:
        assert "failing" in reason and "cpu" not in reason
