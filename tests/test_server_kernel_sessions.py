"""A kernel's session through the server: it survives a hot node, and an idle-culled one is
replaced with one line of notice instead of failing every later cell."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from conftest import BUSYBOX, PYTHON
from server_fixtures import FAST, api, execute, jp_server_config, node_config, remote_started, until

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]


@pytest.fixture
def agents(make_agent):
    """One agent whose sessions are culled after 2 s idle, which is busy above 90 % CPU."""
    return [make_agent(host="127.0.0.7", extra=("--idle-timeout", "2", "--cpu-max", "90"))]


@pytest.fixture
def remote_config(agents, tmp_path):
    return {"nodes": node_config(agents), "db_path": str(tmp_path / "remote.sqlite"), **FAST}


async def node_state(jp_fetch) -> str:
    return (await api(jp_fetch, "nodes"))["nodes"][0]["state"]


def exits(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "exit"]


def notices(events: list[dict]) -> list[str]:
    return [e["message"] for e in events if e["event"] == "notice"]


@pytest.mark.parametrize("who", ["kernel", "owner"])
async def test_an_idle_culled_session_is_replaced_with_one_notice(
    jp_fetch, jp_serverapp, agents, who
):
    """Kernels this server started, and owners (kernels it did not start: nbval, VS Code)."""
    await until(lambda: _state_in(jp_fetch, "healthy", "busy"))
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    whose = {"kernel_id": kernel_id} if who == "kernel" else {"owner": f"kernel-{kernel_id}"}
    try:
        first = await execute(jp_fetch, **whose, image=BUSYBOX, command="echo kept > /tmp/f")
        assert exits(first)[0]["status"] == "completed" and not notices(first)
        kept = await execute(jp_fetch, **whose, image=BUSYBOX, command="cat /tmp/f")
        assert [e["data"] for e in kept if e["event"] == "stdout"] == ["kept\n"]
        owner = whose.get("kernel_id") or whose["owner"]
        old = (await api(jp_fetch, "kernels", owner, "sessions"))["sessions"][0]

        async def culled():
            models = await asyncio.to_thread(agents[0].client.sessions)
            return not any(s["session_id"] == old["session_id"] for s in models)

        await until(culled, timeout=20)
        after = await execute(jp_fetch, **whose, image=BUSYBOX, command="ls /tmp/f")
        (notice,) = notices(after)
        assert "idle" in notice and "new one" in notice and "\n" not in notice
        assert exits(after)[0]["returncode"] != 0  # the old session's files are gone
        again = await execute(jp_fetch, **whose, image=BUSYBOX, command="echo ok")
        assert exits(again)[0]["status"] == "completed" and not notices(again)
        assert [e["data"] for e in again if e["event"] == "stdout"] == ["ok\n"]
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)


async def test_a_kernels_cells_keep_running_on_a_node_pinned_by_a_job(jp_fetch, jp_serverapp):
    await until(lambda: _state_in(jp_fetch, "healthy"))
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    job = await api(
        jp_fetch,
        "jobs",
        method="POST",
        body={
            "image": BUSYBOX,
            "cpus": 1,
            "timeout": 60,
            "tasks": [{"command": "while :; do :; done"} for _ in range(2)],
        },
    )
    try:
        await until(lambda: _state_in(jp_fetch, "busy"), timeout=20)
        results = []
        for i in range(12):
            events = await execute(
                jp_fetch, kernel_id=kernel_id, image=BUSYBOX, command=f"echo cell {i}"
            )
            results.append(exits(events)[0])
        assert [r["status"] for r in results] == ["completed"] * 12, results
        nodes = (await api(jp_fetch, "nodes"))["nodes"]
        assert nodes[0]["state"] == "busy" and nodes[0]["warnings"], nodes[0]
    finally:
        await api(jp_fetch, "jobs", job["job_id"], "stop", method="POST", body={})
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)


async def _state_in(jp_fetch, *states: str) -> bool:
    return await node_state(jp_fetch) in states


FIVE_MB = 5_000_000


async def test_5_mb_shell_and_python_cells_run_through_the_server(jp_fetch, jp_serverapp):
    await until(lambda: _state_in(jp_fetch, "healthy", "busy"))
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    pad = "# a line that pads a very large cell to megabytes, nothing to run here\n"
    copies = FIVE_MB // len(pad) + 1
    try:
        shell = await execute(
            jp_fetch, kernel_id=kernel_id, image=BUSYBOX, command=pad * copies + "echo end=$((6*7))"
        )
        assert exits(shell)[0]["status"] == "completed", exits(shell)
        assert "".join(e["data"] for e in shell if e["event"] == "stdout") == "end=42\n"
        python = await execute(
            jp_fetch,
            kernel_id=kernel_id,
            image=PYTHON,
            python="n = 0\n" + "n += 1\n" * (FIVE_MB // 7) + "print('n', n)",
        )
        assert exits(python)[0]["status"] == "completed", exits(python)
        # how output is cut into events is not a promise (print writes each piece)
        stdout = "".join(e["data"] for e in python if e["event"] == "stdout")
        assert stdout == f"n {FIVE_MB // 7}\n"
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)


async def test_at_stop_the_server_removes_its_kernels_sessions_and_keeps_clients(
    jp_fetch, jp_serverapp, agents
):
    """The server stops its extension before it shuts its kernels down: their sessions go
    then; an API client's session is its owner's to remove."""
    await until(lambda: _state_in(jp_fetch, "healthy", "busy"))
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    ran = await execute(jp_fetch, kernel_id=kernel_id, image=BUSYBOX, command="true")
    assert exits(ran)[0]["status"] == "completed"
    client = await api(
        jp_fetch, "sessions", method="POST", body={"owner": "stop-test-client", "image": BUSYBOX}
    )
    kernels = jp_serverapp.web_app.settings["jupyter_remote_manager"].kernels
    (mine,) = kernels.for_kernel(kernel_id)
    try:
        count, removed = await kernels.remove_at_stop()
        assert count == 1 and [r["session_id"] for r in removed] == [mine["session_id"]]
        left = {s["session_id"] for s in await asyncio.to_thread(agents[0].client.sessions)}
        assert mine["session_id"] not in left and client["session_id"] in left
        assert kernels.for_kernel(kernel_id) == [] and kernels.for_kernel("stop-test-client")
        assert await kernels.remove_kernel("stop-test-client") == []  # nothing after the stop
    finally:
        await asyncio.to_thread(agents[0].client.delete_session, client["session_id"])
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)


async def test_a_node_that_does_not_answer_holds_the_stop_up_for_stop_wait_only(
    jp_fetch, jp_serverapp, agents
):
    await until(lambda: _state_in(jp_fetch, "healthy", "busy"))
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    ran = await execute(jp_fetch, kernel_id=kernel_id, image=BUSYBOX, command="true")
    assert exits(ran)[0]["status"] == "completed"
    kernels = jp_serverapp.web_app.settings["jupyter_remote_manager"].kernels
    (mine,) = kernels.for_kernel(kernel_id)
    kernels.stop_wait = 1.0
    agents[0].proc.send_signal(signal.SIGSTOP)  # it takes connections and never answers
    try:
        started = time.monotonic()
        count, removed = await kernels.remove_at_stop()
        assert time.monotonic() - started < 5
        assert (count, removed) == (1, [])
        kept = [r["key"] for r in kernels.store.load("kernel_session")]
        assert mine["key"] in kept  # the next start's housekeeping removes it
    finally:
        agents[0].proc.send_signal(signal.SIGCONT)
        await asyncio.to_thread(agents[0].client.delete_session, mine["session_id"])
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)
