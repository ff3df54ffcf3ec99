"""The server extension against real agents: nodes, auth, selection, stickiness, kernels."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from tornado.httpclient import HTTPClientError

from conftest import BUSYBOX
from server_fixtures import (
    agents,
    api,
    execute,
    healthy,
    jp_server_config,
    remote_config,
    remote_started,
    until,
)

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
        execute(jp_fetch, node=agents[0].node_id, image=BUSYBOX, command="sleep 6")
    )
    await asyncio.sleep(0.5)
    chosen = [
        (await execute(jp_fetch, image=BUSYBOX, command="true"))[0]["node_id"] for _ in range(4)
    ]
    assert agents[0].node_id not in chosen
    await busy


async def test_unauthenticated_calls_are_refused(jp_fetch, agents):
    bad = {"Authorization": "token not-the-token"}
    for method, path, body in [
        ("GET", ("nodes",), None),
        ("POST", ("nodes",), {"url": agents[0].url}),
        ("POST", ("executions",), {"command": "true"}),
        ("GET", ("jobs",), None),
        ("POST", ("jobs",), {"command": "true"}),
        ("GET", ("status",), None),
    ]:
        kw = {"body": "{}" if body is None and method == "POST" else None}
        if body is not None:
            kw["body"] = json.dumps(body)
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch(
                "remote",
                "api",
                *path,
                method=method,
                headers=bad,
                **{k: v for k, v in kw.items() if v is not None},
            )
        assert err.value.code == 403, (method, path)
    assert (await api(jp_fetch, "jobs"))["jobs"] == []


async def test_kernel_session_sticks_to_its_node_and_goes_with_the_kernel(
    jp_fetch, jp_serverapp, agents, docker_client
):
    await healthy(jp_fetch)
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    try:
        first = await execute(
            jp_fetch, kernel_id=kernel_id, image=BUSYBOX, command="echo kept > /tmp/state"
        )
        home = first[0]["node_id"]
        assert first[-1]["returncode"] == 0
        busy = asyncio.ensure_future(
            execute(jp_fetch, node=home, image=BUSYBOX, command="sleep 1.5")
        )
        await asyncio.sleep(0.3)
        again = await execute(
            jp_fetch, kernel_id=kernel_id, image=BUSYBOX, command="cat /tmp/state"
        )
        assert again[0]["node_id"] == home, "the kernel's session moved although it is stateful"
        assert "".join(e.get("data", "") for e in again) == "kept\n"
        await busy
        sessions = (await api(jp_fetch, "kernels", kernel_id, "sessions"))["sessions"]
        assert [s["node_id"] for s in sessions] == [home]
        agent = next(a for a in agents if a.node_id == home)
        assert agent.containers(docker_client, kind="session")
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)

    def gone():
        return not agent.containers(docker_client, kind="session")

    await until(lambda: asyncio.to_thread(gone), timeout=10)
    assert (await api(jp_fetch, "kernels", kernel_id, "sessions"))["sessions"] == []


async def test_bad_requests_get_4xx_json_and_change_nothing(jp_fetch, agents):
    await healthy(jp_fetch)
    cases = [
        ("POST", ("executions",), "{not json", 400, "not valid JSON"),
        ("POST", ("executions",), '{"node": "nowhere", "command": "true"}', 404, "no node"),
        (
            "POST",
            ("executions",),
            '{"kernel_id": "k-none", "command": "true"}',
            400,
            "not running in this Jupyter server",
        ),
        (
            "POST",
            ("executions",),
            '{"image": "missing/image:0", "command": "true"}',
            400,  # no node has it: a mistake to fix, not a wait (503 is for a busy pool)
            "never pull",
        ),
        ("POST", ("executions",), '{"image": "' + BUSYBOX + '"}', 400, "exactly one of"),
        ("POST", ("nodes",), '{"url": "http://127.0.0.9:1"}', 400, "did not answer"),
        ("POST", ("nodes",), '{"url": "ftp://x"}', 400, "http(s)"),
        ("GET", ("jobs", "no-such-job"), None, 404, "no job"),
        ("POST", ("jobs",), '{"tasks": []}', 400, "tasks"),
        ("POST", ("jobs",), '{"command": "true", "nodes": ["nowhere"]}', 404, "no node"),
        ("POST", ("jobs",), '{"command": "true", "memory": "lots"}', 400, "memory"),
        ("DELETE", ("nodes", "nowhere"), None, 404, "no node"),
    ]
    for method, path, body, code, words in cases:
        kw = {"body": body} if body is not None else {}
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("remote", "api", *path, method=method, **kw)
        reply = json.loads(err.value.response.body)
        assert err.value.code == code and words in reply["message"], (path, code, reply)
    assert len((await api(jp_fetch, "nodes"))["nodes"]) == 3
    assert (await api(jp_fetch, "jobs"))["jobs"] == []
    kept = (await api(jp_fetch, "executions"))["executions"]
    assert kept == [], [(r["status"], r["message"]) for r in kept]


async def test_kernels_started_by_the_server_know_how_to_reach_the_api(jp_serverapp):
    kernel_id = await jp_serverapp.kernel_manager.start_kernel()
    try:
        client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
        # no heartbeat: its 1 s time-to-dead calls a kernel on two loaded cores dead before
        # it answers kernel_info; the server, which started it, knows whether it lives
        client.start_channels(hb=False)
        await client.wait_for_ready(timeout=60)
        code = (
            "import os; print(os.environ['JUPYTER_REMOTE_SERVER_URL'], "
            "os.environ['JUPYTER_REMOTE_SERVER_TOKEN'])"
        )
        reply = await client.execute_interactive(code, timeout=60, output_hook=_collect)
        assert reply["content"]["status"] == "ok"
        url, token = _collected.pop().split()
        assert url == jp_serverapp.connection_url
        assert token == jp_serverapp.identity_provider.token
        client.stop_channels()
    finally:
        await jp_serverapp.kernel_manager.shutdown_kernel(kernel_id)


_collected: list[str] = []


def _collect(msg: dict) -> None:
    if msg["msg_type"] == "stream":
        _collected.append(msg["content"]["text"].strip())


async def test_a_caller_that_leaves_cancels_the_execution_on_the_agent(
    jp_fetch, jp_http_port, jp_base_url, jp_auth_header, agents
):
    await healthy(jp_fetch)
    node = agents[2]
    url = f"http://localhost:{jp_http_port}{jp_base_url}remote/api/executions"
    body = {"execution_id": "leaver", "node": node.node_id, "image": BUSYBOX, "command": "sleep 30"}

    def start_and_leave() -> dict:
        resp = requests.post(url, json=body, headers=jp_auth_header, stream=True, timeout=30)
        first = json.loads(next(resp.iter_lines()))
        resp.close()
        return first

    started = await asyncio.to_thread(start_and_leave)
    assert started["event"] == "started" and started["node_id"] == node.node_id

    async def cancelled():
        model = await asyncio.to_thread(node.client.execution, "leaver")
        return model["status"] == "cancelled"

    await until(cancelled, timeout=10)


async def test_cancel_endpoint_ends_a_running_execution(jp_fetch, agents):
    await healthy(jp_fetch)
    running = asyncio.ensure_future(
        execute(jp_fetch, execution_id="to-cancel", image=BUSYBOX, command="sleep 30")
    )
    await until(lambda: _has_record(jp_fetch, "to-cancel"))
    await asyncio.sleep(0.3)
    await api(jp_fetch, "executions", "to-cancel", "cancel", method="POST", body={})
    events = await running
    assert events[-1]["status"] == "cancelled" and events[-1]["cancelled"] is True
    record = await api(jp_fetch, "executions", "to-cancel")
    assert record["status"] == "cancelled"


async def _has_record(jp_fetch, execution_id: str) -> bool:
    executions = (await api(jp_fetch, "executions"))["executions"]
    return any(r["execution_id"] == execution_id for r in executions)


async def test_event_streams_are_records_for_clients_that_ask_and_ndjson_for_others(
    jp_fetch, jp_http_port, jp_base_url, jp_auth_header, agents
):
    """The server asks its agents for records and passes them on to a client that asked
    too; to any other it sends NDJSON lines holding the same events."""
    from conftest import PYTHON
    from jupyter_remote.protocol import records

    await healthy(jp_fetch)
    base = f"http://localhost:{jp_http_port}{jp_base_url}remote/api/executions"
    code = "printf 'q\"\\\\\\\\x\\n\\001'; printf '\\303\\251' >&2"

    def post(eid: str, accept: str | None) -> requests.Response:
        headers = {**jp_auth_header, **({"Accept": accept} if accept else {})}
        body = {"execution_id": eid, "node": agents[0].node_id, "image": PYTHON, "command": code}
        return requests.post(base, json=body, headers=headers, timeout=60)

    raw = await asyncio.to_thread(post, "as-records", records.RECORDS_TYPE)
    plain = await asyncio.to_thread(post, "as-ndjson", None)
    assert raw.headers["Content-Type"].startswith(records.RECORDS_TYPE)
    assert plain.headers["Content-Type"].startswith("application/x-ndjson")
    assert b'{"event":"stdout","size":' in raw.content
    got_raw = list(records.events(raw.content))
    got_plain = [json.loads(line) for line in plain.content.splitlines()]
    for events in (got_raw, got_plain):
        assert "".join(e["data"] for e in events if e["event"] == "stdout") == 'q"\\\\x\n\x01'
        assert "".join(e["data"] for e in events if e["event"] == "stderr") == "é"
        assert events[-1]["event"] == "exit" and events[-1]["returncode"] == 0
    replay = await asyncio.to_thread(
        requests.get, f"{base}/as-records/events", headers=jp_auth_header, timeout=30
    )
    assert [json.loads(line) for line in replay.content.splitlines()][-1]["event"] == "exit"
