"""Every server request body is checked at the edge: a 4xx naming the field, nothing kept."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from conftest import BUSYBOX
from server_fixtures import api, execute, healthy, jp_server_config, remote_started

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["jp_server_config", "remote_started"]

JOIN_TOKEN = "join-sesame"
POSTS = [
    ("nodes",),
    ("nodes", "join"),
    ("executions",),
    ("executions", "x-1", "cancel"),
    ("sessions",),
    ("jobs",),
]


@pytest.fixture
def agents(make_agent):
    """One real agent is enough to show that nothing reaches it."""
    return [make_agent(host="127.0.0.2")]


@pytest.fixture
def remote_config(agents, tmp_path):
    from processes import FAST, node_config

    return {
        "nodes": node_config(agents),
        "db_path": str(tmp_path / "remote.sqlite"),
        "join_token": JOIN_TOKEN,
        "max_execution_body": 1 << 20,  # 32 MiB by default: a cell may be large
        **FAST,
    }


async def refused(jp_fetch, *path, raw: bytes | str, headers=None) -> tuple[int, dict]:
    """POST a raw body; the error's status and JSON (a 2xx fails the test)."""
    headers = headers or (
        {"Authorization": f"Bearer {JOIN_TOKEN}"} if path == ("nodes", "join") else {}
    )
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("remote", "api", *path, method="POST", body=raw, headers=headers)
    return err.value.code, json.loads(err.value.response.body)


async def nothing_kept(jp_fetch) -> None:
    assert (await api(jp_fetch, "executions"))["executions"] == []
    assert (await api(jp_fetch, "jobs"))["jobs"] == []
    status = await api(jp_fetch, "status")
    assert status["jobs"] == status["executions"] == 0 and status["nodes"] == 1


@pytest.mark.parametrize(
    "raw, reason",
    [
        ({"command": "true", "node": {}}, "bad_node"),
        ({"command": "true", "kernel_id": []}, "bad_kernel_id"),
        ({"argv": 5}, "bad_argv"),
        ({"argv": ["true"], "timeout": 1e10}, "bad_timeout"),
        ({"argv": ["true"], "timeout": "10"}, "bad_timeout"),
        ({"argv": ["true"], "timeout": True}, "bad_timeout"),
        ({"argv": ["true"], "execution_id": "x-1\n"}, "bad_execution_id"),
        ({"argv": ["true"], "fresh": "yes"}, "bad_fresh"),
        ({"argv": ["true"], "timout": 5}, "bad_timout"),
        ('{"argv": ["true"], "timeout": NaN}', "bad_json"),
        ('{"argv": ["true"], "timeout": Infinity}', "bad_json"),
        ('{"argv": ["true"], "timeout": -Infinity}', "bad_json"),
    ],
)
async def test_bad_execution_bodies_are_400_before_anything_is_reserved(jp_fetch, raw, reason):
    await healthy(jp_fetch, 1)
    code, body = await refused(
        jp_fetch, "executions", raw=raw if isinstance(raw, str) else json.dumps(raw)
    )
    assert code == 400 and body["reason"] == reason, body
    field = reason.removeprefix("bad_")
    assert field in body["message"] or reason == "bad_json", body
    await nothing_kept(jp_fetch)


@pytest.mark.parametrize("timeout", [-1, 0, "10", True, 1e308])
async def test_bad_job_timeouts_are_400_and_no_job_is_kept(jp_fetch, timeout):
    await healthy(jp_fetch, 1)
    for raw in (
        {"image": BUSYBOX, "command": "true", "timeout": timeout},
        {"image": BUSYBOX, "tasks": [{"command": "true", "timeout": timeout}]},
    ):
        code, body = await refused(jp_fetch, "jobs", raw=json.dumps(raw))
        assert code == 400 and body["reason"] == "bad_timeout", body
    await nothing_kept(jp_fetch)


async def test_deep_nesting_is_400_on_every_post(jp_fetch):
    deep = '{"a": ' + "[" * 50_000 + "]" * 50_000 + "}"
    for path in POSTS:
        code, body = await refused(jp_fetch, *path, raw=deep)
        assert code == 400 and body["reason"] == "bad_json", (path, body)
    await nothing_kept(jp_fetch)


async def test_a_job_body_over_the_limit_is_413_and_nothing_is_stored(jp_fetch):
    raw = json.dumps({"image": BUSYBOX, "tasks": [{"command": "echo " + "x" * (1 << 20)}]})
    code, body = await refused(jp_fetch, "jobs", raw=raw)
    assert code == 413 and body["reason"] == "body_too_large" and "max_job_body" in body["message"]
    await nothing_kept(jp_fetch)


async def test_an_execution_body_over_its_limit_is_413_and_nothing_is_kept(jp_fetch):
    raw = json.dumps({"image": BUSYBOX, "command": "echo " + "x" * (1 << 20)})
    code, body = await refused(jp_fetch, "executions", raw=raw)
    assert code == 413 and "max_execution_body" in body["message"], body
    await nothing_kept(jp_fetch)


async def test_a_null_timeout_keeps_the_default_and_runs(jp_fetch):
    """null means "not given" (the agent's default applies), never "no limit"."""
    await healthy(jp_fetch, 1)
    events = await execute(jp_fetch, image=BUSYBOX, command="echo ok", timeout=None)
    assert events[-1]["event"] == "exit" and events[-1]["returncode"] == 0, events


async def test_a_job_for_an_image_no_node_has_is_refused_at_submit(jp_fetch):
    await healthy(jp_fetch, 1)
    raw = json.dumps({"image": "no-such/image:1", "command": "true"})
    code, body = await refused(jp_fetch, "jobs", raw=raw)
    assert code == 400 and body["reason"] == "image_not_found", body
    assert "no-such/image:1" in body["message"]
    await nothing_kept(jp_fetch)
    job = await api(jp_fetch, "jobs", method="POST", body={"image": BUSYBOX, "command": "true"})
    assert job["tasks_total"] == 1  # a good one still goes


@pytest.mark.parametrize("url", ["http://[::1", "ftp://host", "http://host:99999", 5, "http://"])
async def test_broken_node_urls_are_400_bad_url(jp_fetch, url):
    for path in (("nodes",), ("nodes", "join")):
        code, body = await refused(jp_fetch, *path, raw=json.dumps({"url": url}))
        assert code == 400 and body["reason"] == "bad_url", (path, body)
    assert len((await api(jp_fetch, "nodes"))["nodes"]) == 1


async def test_non_ascii_tokens_are_refused_never_500(jp_fetch):
    for path in (("nodes", "join"), ("jobs",), ("executions",)):
        headers = {"Authorization": "Bearer jöin-séssame"}
        code, body = await refused(jp_fetch, *path, raw="{}", headers=headers)
        assert code in (401, 403), (path, code)
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("remote", "api", "nodes", "join", headers={"Authorization": "Bearer é"})
    assert err.value.code == 401
    assert json.loads(err.value.response.body)["reason"] == "bad_join_token"
    await nothing_kept(jp_fetch)


async def test_bad_session_and_cancel_bodies_are_400(jp_fetch):
    for path, raw, reason in [
        (("sessions",), {"owner": "a/b"}, "bad_owner"),
        (("sessions",), {"cpus": 1e308}, "bad_cpus"),
        (("sessions",), {"memory": "9999999t"}, "bad_memory"),
        (("sessions",), {"node": {}}, "bad_node"),
        (("executions", "x-1", "cancel"), {"signal": "SIGBOGUS"}, "bad_signal"),
    ]:
        code, body = await refused(jp_fetch, *path, raw=json.dumps(raw))
        assert code == 400 and body["reason"] == reason, (path, body)
