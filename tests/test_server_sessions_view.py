"""GET /remote/api/sessions against a real agent: whose notebook, which node and path, the cell
running now, one session removed, and a frozen node that does not hold up the list."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from conftest import BUSYBOX, PYTHON
from jupyter_remote.protocol.server_openapi import SessionList
from server_fixtures import FAST, api, execute, jp_server_config, node_config, remote_started, until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]


@pytest.fixture
def agents(make_agent):
    return [make_agent(host="127.0.0.21", extra=("--cpu-max", "100", "--memory-max", "100"))]


@pytest.fixture
def remote_config(agents, tmp_path):
    return {"nodes": node_config(agents), "db_path": str(tmp_path / "remote.sqlite"), **FAST}


async def rows(jp_fetch) -> dict[str, dict]:
    answer = await api(jp_fetch, "sessions")
    SessionList.model_validate(answer)  # the document's response model
    return {r["owner"] + "/" + r["image"]: r for r in answer["sessions"]}


async def test_sessions_show_notebook_node_path_and_the_running_cell(
    jp_fetch, jp_serverapp, jp_root_dir, agents
):
    await until(lambda: _usable(jp_fetch))
    (jp_root_dir / "work").mkdir()
    (jp_root_dir / "work" / "analysis.ipynb").write_text("{}")
    body = {"path": "work/analysis.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
    resp = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    made = json.loads(resp.body)
    kernel_id = made["kernel"]["id"]
    owner = "c-sessions-view"
    try:
        first = await execute(jp_fetch, kernel_id=kernel_id, image=PYTHON, command="echo hi")
        assert first[-1]["status"] == "completed"
        await execute(jp_fetch, owner=owner, image=BUSYBOX, command="echo hi")

        # the agent marks a session idle just after the exit line it sends (a lease renewal
        # may sit between them): the view converges, the test does not race it
        async def both_idle():
            seen = await rows(jp_fetch)
            keys = (f"{kernel_id}/{PYTHON}", f"{owner}/{BUSYBOX}")
            return seen if all(seen[k]["state"] == "idle" for k in keys) else None

        seen = await until(both_idle, timeout=10)
        mine = seen[f"{kernel_id}/{PYTHON}"]
        assert mine["notebook"] == {"path": "work/analysis.ipynb", "name": "analysis.ipynb"}
        assert mine["node_id"] == agents[0].node_id and mine["kind"] == "kernel"
        assert mine["path"] == "runner" and mine["state"] == "idle"
        assert 0 <= mine["idle_for"] < 60 and mine["running"] is None
        theirs = seen[f"{owner}/{BUSYBOX}"]
        assert theirs["notebook"] is None and theirs["kind"] == "client"
        assert theirs["path"] == "exec" and theirs["state"] == "idle"

        # CPU and memory come from the node's per-container samples
        async def sampled():
            row = (await rows(jp_fetch))[f"{kernel_id}/{PYTHON}"]
            return row if row["memory_bytes"] else None

        assert (await until(sampled, timeout=20))["memory_bytes"] > 0

        # a long cell shows as running with its elapsed time; SIGINT from here ends it
        long = asyncio.ensure_future(
            execute(
                jp_fetch,
                kernel_id=kernel_id,
                image=PYTHON,
                command="for i in $(seq 1 600); do echo $i; sleep 0.1; done",
            )
        )

        async def running():
            row = (await rows(jp_fetch))[f"{kernel_id}/{PYTHON}"]
            ok = row["state"] == "running" and (row["running"]["elapsed"] or 0) > 1
            return row if ok else None

        row = await until(running, timeout=30)
        assert row["idle_for"] is None and row["running"]["execution_id"]
        await api(
            jp_fetch,
            "executions",
            row["running"]["execution_id"],
            "cancel",
            method="POST",
            body={"signal": "SIGINT"},
        )
        events = await asyncio.wait_for(long, 30)
        assert events[-1]["event"] == "exit" and events[-1]["status"] != "completed"
        after = await until(lambda: _state(jp_fetch, f"{kernel_id}/{PYTHON}", "idle"), timeout=15)
        assert after["running"] is None

        # Remove one session (owner + image); the kernel's stays
        removed = await api(jp_fetch, "sessions", owner, method="DELETE", params={"image": BUSYBOX})
        assert [r["session_id"] for r in removed["removed"]] == [theirs["session_id"]]
        assert list(await rows(jp_fetch)) == [f"{kernel_id}/{PYTHON}"]
        models = await asyncio.to_thread(agents[0].client.sessions)
        assert theirs["session_id"] not in {m["session_id"] for m in models}

        # a frozen node: the list still answers at once (from the last poll's snapshot), and
        # once the node turns suspect its sessions read "node unavailable"
        agents[0].proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            await rows(jp_fetch)
            assert time.monotonic() - started < 2
            frozen = await until(
                lambda: _state(jp_fetch, f"{kernel_id}/{PYTHON}", "node unavailable"), timeout=15
            )
            assert frozen["reason"] and "suspect" in frozen["reason"]
            assert frozen["notebook"]["name"] == "analysis.ipynb"
        finally:
            agents[0].proc.send_signal(signal.SIGCONT)
    finally:
        await jp_fetch("api", "sessions", made["id"], method="DELETE")


async def _state(jp_fetch, key: str, state: str):
    row = (await rows(jp_fetch)).get(key)
    return row if row and row["state"] == state else None


async def _usable(jp_fetch) -> bool:
    nodes = (await api(jp_fetch, "nodes"))["nodes"]
    return bool(nodes) and all(n["state"] in ("healthy", "busy") for n in nodes)
