"""Users on one Jupyter server: each sees and acts on their own executions, jobs and
sessions only (another's id is the 404 of an unknown one, on every route of the route
table), operators see all; the per-user quota refuses with a clear 403 and makes nothing;
job limits no node can give are a 400 at submit.

A real Jupyter server whose identity provider names users by their token (as JupyterHub's
or a custom one would), two real agents on loopback, the real Docker engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid

import pytest
import requests
from jupyter_server.auth.identity import IdentityProvider, User

from jupyter_remote_server.handlers.base import RemoteHandler
from jupyter_remote_server.routes import ID, ROUTES
from jupyter_remote_server.services.user_quota import (
    QuotaExceeded,
    UserQuota,
    ask_of,
    job_ask,
    parse_limits,
)
from processes import BUSYBOX, FAST, node_config
from server_fixtures import healthy, remote_started, until  # noqa: F401 - a fixture
from server_process import ServerProcess

pytest_plugins = ["pytest_jupyter.jupyter_server"]

USERS = ("alice", "bob", "carol", "dave", "erin", "root")
CALM = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100")
QUOTA = {"sessions": 1, "cpus": 3, "memory": "8g"}


class TokenUsers(IdentityProvider):
    """Token NAME-token is user NAME; anything else as jupyter_server decides."""

    async def get_user_token(self, handler):
        given = self.get_token(handler)
        if given and given.endswith("-token") and given[: -len("-token")] in USERS:
            return User(given[: -len("-token")])
        return await super().get_user_token(handler)


@pytest.fixture
def agents(make_agent):
    return [make_agent(host=f"127.0.0.{i}", extra=CALM) for i in (2, 3)]


@pytest.fixture
def jp_server_config(agents, tmp_path):
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_remote_server": True},
            "identity_provider_class": TokenUsers,
        },
        "RemoteApp": {
            "nodes": node_config(agents),
            "db_path": str(tmp_path / "remote.sqlite"),
            "operators": ["root"],
            "user_quota": QUOTA,
            **FAST,
        },
    }


async def call(jp_fetch, who, method, *path, body=None, params=None, raw=None):
    """(status, decoded answer) as user `who`; never raises for a 4xx."""
    kw = {"method": method, "raise_error": False, "request_timeout": 120}
    if raw is not None:
        kw["body"] = raw
    elif body is not None or method in ("POST", "PUT"):
        kw["body"] = json.dumps(body or {})
    resp = await jp_fetch(
        "remote",
        "api",
        *path,
        headers={"Authorization": f"token {who}-token"},
        params=params,
        **kw,
    )
    try:
        return resp.code, json.loads(resp.body)
    except ValueError:
        lines = [json.loads(x) for x in resp.body.splitlines() if x.strip().startswith(b"{")]
        return resp.code, lines


def same_404(theirs, unknown, their_id: str, unknown_id: str) -> None:
    """Another user's object answers exactly what an unknown id answers."""
    (code_a, body_a), (code_b, body_b) = theirs, unknown
    assert code_a == code_b == 404, (theirs, unknown)
    assert body_a["reason"] == body_b["reason"]
    assert set(body_a) == set(body_b) == {"message", "reason"}
    assert body_a["message"].replace(their_id, "ID") == body_b["message"].replace(unknown_id, "ID")


def methods(handler: type) -> list[str]:
    return [
        m.upper()
        for m in ("get", "post", "put", "delete")
        if getattr(handler, m) is not getattr(RemoteHandler, m)
    ]


async def alice_objects(jp_fetch) -> dict:
    code, events = await call(
        jp_fetch,
        "alice",
        "POST",
        "executions",
        body={"execution_id": "alice-x1", "image": BUSYBOX, "command": "echo hi"},
    )
    assert code == 200 and events[-1]["status"] == "completed", events
    code, session = await call(
        jp_fetch, "alice", "POST", "sessions", body={"owner": "alice-o1", "image": BUSYBOX}
    )
    assert code == 201, session
    code, job = await call(
        jp_fetch,
        "alice",
        "POST",
        "jobs",
        body={"job_id": "alice-j1", "image": BUSYBOX, "command": "echo out"},
    )
    assert code == 201, job
    await call(jp_fetch, "alice", "GET", "jobs", "alice-j1", "wait", params={"timeout": "30"})
    return {"execution": "alice-x1", "owner": "alice-o1", "job": "alice-j1"}


async def test_another_users_objects_are_404_on_every_route(jp_fetch):
    await healthy(jp_fetch, 2)
    mine = await alice_objects(jp_fetch)
    img = {"image": BUSYBOX}
    files = {"path": "/tmp", **img}
    # every route of the table naming an object, each method: how it is asked
    by_route = {
        f"nodes/{ID}": None,  # the pool's nodes are no user's
        f"executions/{ID}": ("execution", {}),
        f"executions/{ID}/events": ("execution", {}),
        f"executions/{ID}/cancel": ("execution", {}),
        f"kernels/{ID}/sessions": ("kernel", {}),
        f"sessions/{ID}": ("owner", img),
        f"sessions/{ID}/files": ("owner", files),
        f"jobs/{ID}": ("job", {}),
        f"jobs/{ID}/wait": ("job", {"timeout": "0"}),
        f"jobs/{ID}/stop": ("job", {}),
        f"jobs/{ID}/logs": ("job", {"task": "0"}),
        f"jobs/{ID}/tasks/{ID}/outputs": ("job", {"path": "/out"}),
    }
    with_ids = {path for path, _ in ROUTES if ID in path}
    assert set(by_route) == with_ids, "classify every route naming an object here"
    asked = 0
    for path, handler in ROUTES:
        if by_route.get(path) is None:
            continue
        kind, params = by_route[path]
        for method in methods(handler):
            theirs = mine["owner" if kind == "kernel" else kind]
            unknown = f"nope-{uuid.uuid4().hex[:8]}"
            parts = [p for p in path.replace(ID, "{}").format(*[theirs] * 2).split("/")]
            unknown_parts = [p for p in path.replace(ID, "{}").format(unknown, "0").split("/")]
            if path.endswith("outputs"):
                parts[-2] = "0"
            raw = b"" if path.endswith("files") and method == "PUT" else None
            body = {} if method in ("POST", "PUT") and raw is None else None
            got = await call(jp_fetch, "bob", method, *parts, params=params, body=body, raw=raw)
            asked += 1
            if kind == "kernel":  # a kernel's sessions: the ones the caller may see
                assert got[0] == 200 and got[1].get("sessions", got[1].get("removed")) == []
                continue
            if path == f"sessions/{ID}" and method == "DELETE":
                no_image = await call(jp_fetch, "bob", "DELETE", *parts)
                assert no_image == (200, {"removed": []})
            base = await call(
                jp_fetch, "bob", method, *unknown_parts, params=params, body=body, raw=raw
            )
            same_404(got, base, theirs, unknown)
    assert asked >= 14
    # nothing of alice's was touched
    code, job = await call(jp_fetch, "alice", "GET", "jobs", "alice-j1")
    assert code == 200 and job["status"] == "completed"
    code, sessions = await call(jp_fetch, "alice", "GET", "kernels", "alice-o1", "sessions")
    assert [s["kernel_id"] for s in sessions["sessions"]] == ["alice-o1"]
    assert (await call(jp_fetch, "alice", "GET", "executions", "alice-x1"))[0] == 200
    # lists: each user's own; the operator's: all, with whose they are
    for route, key, ident in (
        ("executions", "executions", "execution_id"),
        ("jobs", "jobs", "job_id"),
    ):
        bob = (await call(jp_fetch, "bob", "GET", route))[1][key]
        alice = (await call(jp_fetch, "alice", "GET", route))[1][key]
        root = (await call(jp_fetch, "root", "GET", route))[1][key]
        assert bob == [] and [r[ident] for r in alice] == [mine[route[:-1]]]
        assert [(r[ident], r["user"]) for r in root] == [(mine[route[:-1]], "alice")]
    panel = (await call(jp_fetch, "bob", "GET", "sessions"))[1]["sessions"]
    assert panel == []
    panel = (await call(jp_fetch, "root", "GET", "sessions"))[1]["sessions"]
    assert [r["owner"] for r in panel] == ["alice-o1"]

    # the pool's node answers: a user's own containers only, the operator's all
    async def containers(who):
        nodes = (await call(jp_fetch, who, "GET", "nodes"))[1]["nodes"]
        return {c.get("session_id") for n in nodes for c in n["own_containers"]}

    session_id = sessions["sessions"][0]["session_id"]
    assert session_id in await until(lambda: _has(containers("root"), session_id), 15)
    assert session_id in await containers("alice")
    assert session_id not in await containers("bob")
    # the operator reads and acts on alice's objects
    assert (await call(jp_fetch, "root", "GET", "jobs", "alice-j1"))[0] == 200
    assert (await call(jp_fetch, "root", "GET", "executions", "alice-x1", "events"))[0] == 200
    # ids are not reused across users, and the refusal says nothing of alice's record
    code, body = await call(
        jp_fetch,
        "bob",
        "POST",
        "executions",
        body={"execution_id": "alice-x1", "image": BUSYBOX, "command": "true"},
    )
    assert code == 409 and set(body) == {"message", "reason"}, body
    code, body = await call(
        jp_fetch, "bob", "POST", "jobs", body={"job_id": "alice-j1", "command": "true"}
    )
    assert code == 409 and set(body) == {"message", "reason"}, body
    for what in ({"owner": "alice-o1", "image": BUSYBOX},):
        code, body = await call(jp_fetch, "bob", "POST", "sessions", body=what)
        assert code == 409 and set(body) == {"message", "reason"}, body
        code, body = await call(
            jp_fetch, "bob", "POST", "executions", body={**what, "command": "true"}
        )
        assert code == 409 and set(body) == {"message", "reason"}, body


async def _has(got, item):
    found = await got
    return found if item in found else None


def agent_sessions(agents) -> list[str]:
    return [s["session_id"] for a in agents for s in a.client.sessions()]


async def test_user_quota_refuses_and_makes_nothing(jp_fetch, agents):
    await healthy(jp_fetch, 2)
    code, _ = await call(
        jp_fetch, "carol", "POST", "sessions", body={"owner": "carol-1", "image": BUSYBOX}
    )
    assert code == 201
    before = agent_sessions(agents)
    code, body = await call(
        jp_fetch, "carol", "POST", "sessions", body={"owner": "carol-2", "image": BUSYBOX}
    )
    assert code == 403 and body["reason"] == "quota_exceeded", body
    assert "quota sessions 1 exceeded: 1 in use" in body["message"], body
    assert (body["quota"], body["limit"], body["use"]) == ("sessions", 1, 1)
    code, body = await call(
        jp_fetch,
        "carol",
        "POST",
        "executions",
        body={"execution_id": "carol-x", "image": BUSYBOX, "command": "true", "cpus": 2.5},
    )
    assert code == 403 and "quota cpus 3 exceeded: 1 in use" in body["message"], body
    code, body = await call(
        jp_fetch,
        "carol",
        "POST",
        "jobs",
        body={"job_id": "carol-j", "image": BUSYBOX, "command": "true", "memory": "7g"},
    )
    assert code == 403 and "quota memory 8g exceeded: 2g in use" in body["message"], body
    assert agent_sessions(agents) == before
    assert (await call(jp_fetch, "carol", "GET", "executions", "carol-x"))[0] == 404
    assert (await call(jp_fetch, "carol", "GET", "jobs"))[1]["jobs"] == []
    # removed, it gives its share back
    code, _ = await call(
        jp_fetch, "carol", "DELETE", "sessions", "carol-1", params={"image": BUSYBOX}
    )
    assert code == 200
    code, _ = await call(
        jp_fetch, "carol", "POST", "sessions", body={"owner": "carol-2", "image": BUSYBOX}
    )
    assert code == 201
    # concurrent requests cannot together exceed it
    got = await asyncio.gather(
        *(
            call(jp_fetch, "dave", "POST", "sessions", body={"owner": f"d-{i}", "image": BUSYBOX})
            for i in range(8)
        )
    )
    assert sorted(code for code, _ in got) == [201] + [403] * 7, got
    dave = [s for s in agent_sessions(agents) if s.startswith("k-d-")]
    assert len(dave) == 1


async def test_job_limits_no_node_can_give_are_a_400(jp_fetch, agents):
    await healthy(jp_fetch, 2)
    code, body = await call(
        jp_fetch, "erin", "POST", "jobs", body={"image": BUSYBOX, "command": "true", "cpus": 1000}
    )
    assert code == 400 and body["reason"] == "bad_cpus", body
    assert "cpus 1000 is more than any node's CPUs" in body["message"]
    code, body = await call(
        jp_fetch,
        "erin",
        "POST",
        "jobs",
        body={"tasks": [{"command": "true"}, {"command": "true", "memory": "1000t"}]},
    )
    assert code == 400 and body["reason"] == "bad_memory", body
    assert body["message"].startswith("task 1: memory")
    assert (await call(jp_fetch, "erin", "GET", "jobs"))[1]["jobs"] == []
    assert all(not a.client.jobs() for a in agents)


def test_quota_rules():
    """Pure logic: the configured quota's checks and what a job holds."""
    for bad, says in (
        ({"cpu": 1}, "unknown key 'cpu'"),
        ({"memory": "lots"}, "user_quota['memory']"),
        ({"gpus": -1}, "must be a number >= 0"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            parse_limits(bad)
    assert parse_limits({"memory": "1g", "cpus": 2}) == {"memory": 1 << 30, "cpus": 2.0}
    specs = [{"cpus": 2}, {"cpus": 1}, {"cpus": 3, "gpus": [0, 1]}]
    assert job_ask(specs, 2)["cpus"] == 5 and job_ask(specs, None)["cpus"] == 6
    assert job_ask(specs, 1)["gpus"] == 2 and job_ask([{}], None)["memory"] == 2 << 30
    quota = UserQuota({"cpus": 4})
    quota.take("u", "a", ask_of({"cpus": 3}, False), "a")
    with pytest.raises(QuotaExceeded, match="quota cpus 4 exceeded: 3 in use, b asks 2"):
        quota.take("u", "b", ask_of({"cpus": 2}, False), "b")
    quota.take("v", "c", ask_of({"cpus": 4}, False), "c")  # per user
    quota.give_back("a")
    quota.take("u", "b", ask_of({"cpus": 2}, False), "b")


def test_owners_and_quota_holds_survive_a_server_restart(agents, tmp_path):
    """A real server process, killed -9 and started again: records keep their user, and
    the quota counts what is already held."""
    server = ServerProcess(tmp_path, agents, user_quota={"sessions": 1})
    config = json.loads(server.config.read_text())
    config["ServerApp"]["identity_provider_class"] = "test_server_users.TokenUsers"
    server.config.write_text(json.dumps(config))
    here = os.path.dirname(os.path.abspath(__file__))
    server.env["PYTHONPATH"] = os.pathsep.join([here, server.env.get("PYTHONPATH", "")])

    def ask(who, method, *path, **kw):
        resp = requests.request(
            method,
            "/".join([server.url, *path]),
            headers={"Authorization": f"token {who}-token"},
            timeout=60,
            **kw,
        )
        return resp.status_code, resp.json()

    server.start()
    try:
        body = {"owner": "alice-r1", "image": BUSYBOX}
        assert ask("alice", "POST", "sessions", json=body)[0] == 201
        server.kill9()
        server.start()
        code, refused = ask("alice", "POST", "sessions", json={**body, "owner": "alice-r2"})
        assert code == 403 and refused["reason"] == "quota_exceeded", refused
        assert ask("bob", "POST", "sessions", json={**body, "owner": "bob-r1"})[0] == 201
        gone = ask("bob", "DELETE", "sessions", "alice-r1", params={"image": BUSYBOX})
        assert gone[0] == 404, gone
        mine = ask("alice", "GET", "kernels", "alice-r1", "sessions")[1]["sessions"]
        assert [s["user"] for s in mine] == ["alice"]
        assert ask("alice", "DELETE", "sessions", "alice-r1", params={"image": BUSYBOX})[0] == 200
    finally:
        server.stop()
