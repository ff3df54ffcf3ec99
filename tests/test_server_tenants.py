"""Two real Jupyter servers as two tenants on two real agents: neither server's credential
sees, reads, execs into, stops, deletes or downloads the other's sessions, executions,
jobs, logs or files, on any route of the agent's route table or of the server's (each the
404 of an unknown id); the operator's credential sees both; a tenant's quota refuses
through its server with the clear error and makes nothing. And the join flow minting a
server's credential into the agent's tenants file.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import requests
from test_agent_tenants import kind_of, methods_of, same_404

from jupyter_remote.agent.join import keep_joined
from jupyter_remote.agent.web.routes import ROUTES as AGENT_ROUTES
from jupyter_remote_server.handlers.base import RemoteHandler
from jupyter_remote_server.routes import ID, ROUTES
from processes import BUSYBOX
from server_process import ServerProcess

OPERATOR = "t0ken"
TOKENS = {"srv-a": "srv-a-token-1234", "srv-b": "srv-b-token-5678"}
CALM = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100", "--warm-pool-size", "0")


def write_tenants(path, tenants: dict) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"tenants": tenants}, fh)
    return str(path)


@pytest.fixture
def agents(make_agent, tmp_path):
    out = []
    for i in (2, 3):
        doc = {
            "srv-a": {"token": TOKENS["srv-a"]},
            "srv-b": {"token": TOKENS["srv-b"], "quota": {"sessions": 1}},
        }
        path = write_tenants(tmp_path / f"tenants-{i}.json", doc)
        extra = (*CALM, f"--AgentApp.tenants_file={path}")
        out.append(make_agent(host=f"127.0.0.{i}", token=OPERATOR, extra=extra))
    return out


@pytest.fixture
def servers(agents, tmp_path):
    made = {}
    for name in TOKENS:
        where = tmp_path / name
        where.mkdir()
        nodes = [{"url": a.url, "token": TOKENS[name], "node_id": a.node_id} for a in agents]
        made[name] = ServerProcess(where, agents, nodes=nodes).start()
    yield made
    for server in made.values():
        server.stop()


def answer(server, method, *path, body=None, params=None, data=None):
    """(status, JSON or lines) from a server's /remote/api, never raising."""
    kw = {"json": body} if data is None else {"data": data}
    if body is None and data is None and method in ("POST", "PUT"):
        kw = {"json": {}}
    resp = requests.request(
        method,
        "/".join([server.url, *path]),
        params=params,
        timeout=120,
        headers={"Authorization": f"token {server.token}"},
        **kw,
    )
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, [json.loads(x) for x in resp.text.splitlines() if x.strip()]


def make_objects(server, prefix: str, node_id: str) -> dict:
    code, events = answer(
        server,
        "POST",
        "executions",
        body={
            "execution_id": f"{prefix}-x1",
            "image": BUSYBOX,
            "command": "echo hi > /tmp/f",
            "node": node_id,
        },
    )
    assert code == 200 and events[-1]["status"] == "completed", events
    code, session = answer(
        server,
        "POST",
        "sessions",
        body={"owner": f"{prefix}-o1", "image": BUSYBOX, "node": node_id},
    )
    assert code == 201, session
    code, job = answer(
        server,
        "POST",
        "jobs",
        body={
            "job_id": f"{prefix}-j1",
            "image": BUSYBOX,
            "command": "echo out",
            "nodes": [node_id],
        },
    )
    assert code == 201, job
    answer(server, "GET", "jobs", f"{prefix}-j1", "wait", params={"timeout": "30"})
    return {
        "session": session["session_id"],
        "owner": f"{prefix}-o1",
        "execution": f"{prefix}-x1",
        "job": f"{prefix}-j1",
        "agent_job": f"{prefix}-j1.0",
    }


def test_two_servers_two_tenants_every_route(servers, agents):
    a, b = servers["srv-a"], servers["srv-b"]
    node = agents[0]
    objects = {"a": make_objects(a, "a", node.node_id), "b": make_objects(b, "b", node.node_id)}
    b_objs = objects["b"]
    # -- the agent's route table: server A's credential on server B's objects -----------
    foreign = {
        "session": b_objs["session"],
        "execution": b_objs["execution"],
        "job": b_objs["agent_job"],
    }
    asked = 0
    for pattern, handler in AGENT_ROUTES:
        if ID not in pattern:
            continue
        for method in methods_of(handler):
            same_404(node, method, pattern, foreign[kind_of(pattern)], TOKENS["srv-a"])
            asked += 1
    assert asked >= 12

    def listed(token, path, key, field):
        resp = requests.get(
            node.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        return {item[field] for item in resp.json()[key]}

    mine = listed(TOKENS["srv-a"], "/v1/sessions", "sessions", "session_id")
    assert objects["a"]["session"] in mine and b_objs["session"] not in mine
    jobs = listed(TOKENS["srv-a"], "/v1/jobs", "jobs", "job_id")
    assert "a-j1.0" in jobs and "b-j1.0" not in jobs
    # the operator's credential sees both, and whose each is
    both = listed(OPERATOR, "/v1/sessions", "sessions", "session_id")
    assert {objects["a"]["session"], b_objs["session"]} <= both
    both = listed(OPERATOR, "/v1/jobs", "jobs", "job_id")
    assert {"a-j1.0", "b-j1.0"} <= both
    for prefix, objs in objects.items():  # and reads each, with whose it is
        for path in (
            f"/v1/sessions/{objs['session']}",
            f"/v1/executions/{objs['execution']}",
            f"/v1/jobs/{objs['agent_job']}",
        ):
            resp = requests.get(
                node.url + path, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30
            )
            assert resp.status_code == 200, resp.text
            assert resp.json()["tenant"] == f"srv-{prefix}", resp.json()
    # -- the server's route table: server A naming server B's objects ---------------------
    ids = {"execution": b_objs["execution"], "owner": b_objs["owner"], "job": b_objs["job"]}
    kinds = {
        f"nodes/{ID}": None,
        f"executions/{ID}": "execution",
        f"executions/{ID}/events": "execution",
        f"executions/{ID}/cancel": "execution",
        f"kernels/{ID}/sessions": "kernel",
        f"sessions/{ID}": "owner",
        f"sessions/{ID}/files": "owner",
        f"jobs/{ID}": "job",
        f"jobs/{ID}/wait": "job",
        f"jobs/{ID}/stop": "job",
        f"jobs/{ID}/logs": "job",
        f"jobs/{ID}/tasks/{ID}/outputs": "job",
    }
    assert set(kinds) == {p for p, _ in ROUTES if ID in p}
    params = {"image": BUSYBOX, "path": "/tmp", "task": "0", "timeout": "0"}
    for path, handler in ROUTES:
        kind = kinds.get(path)
        if kind is None:
            continue
        for method in [
            m.upper()
            for m in ("get", "post", "put", "delete")
            if getattr(handler, m) is not getattr(RemoteHandler, m)
        ]:
            theirs = ids["owner" if kind == "kernel" else kind]
            got = {}
            for oid in (theirs, "never-used-id"):
                parts = path.replace(ID, "{}").format(oid, "0").split("/")
                data = b"" if method == "PUT" else None
                code, body = answer(a, method, *parts, params=params, data=data)
                got[oid] = (code, json.dumps(body).replace(oid, "ID"))
            if kind == "kernel":
                assert got[theirs][0] == 200 and "[]" in got[theirs][1]
            elif path == f"sessions/{ID}" and method == "DELETE":
                assert got[theirs] == got["never-used-id"]
            else:
                assert got[theirs][0] == 404, (method, path, got)
                assert got[theirs] == got["never-used-id"], (method, path, got)
    # server A cannot exec into server B's session by naming it
    code, body = answer(
        a,
        "POST",
        "executions",
        body={"session_id": b_objs["session"], "node": node.node_id, "command": "cat /tmp/f"},
    )
    assert code == 404 and body["reason"] == "session_not_found", body
    # server A's lists and its view of the node hold none of server B's work
    assert [j["job_id"] for j in answer(a, "GET", "jobs")[1]["jobs"]] == ["a-j1"]
    assert {s["owner"] for s in answer(a, "GET", "sessions")[1]["sessions"]} == {"a-o1"}
    containers = answer(a, "GET", "nodes", node.node_id)[1]["own_containers"]
    assert b_objs["session"] not in {c.get("session_id") for c in containers}
    # B's objects are intact
    assert answer(b, "GET", "jobs", "b-j1")[1]["status"] == "completed"
    assert b_objs["session"] in listed(OPERATOR, "/v1/sessions", "sessions", "session_id")


def test_a_tenants_quota_refuses_through_its_server(servers, agents):
    b = servers["srv-b"]
    node = agents[0]
    code, _ = answer(
        b, "POST", "sessions", body={"owner": "b-q1", "image": BUSYBOX, "node": node.node_id}
    )
    assert code == 201
    before = node.client.sessions()
    code, body = answer(
        b, "POST", "sessions", body={"owner": "b-q2", "image": BUSYBOX, "node": node.node_id}
    )
    assert code == 403 and body["reason"] == "quota_exceeded", body
    assert "quota sessions 1 exceeded" in body["message"], body
    assert node.client.sessions() == before
    assert {s["owner"] for s in answer(b, "GET", "sessions")[1]["sessions"]} == {"b-q1"}


def test_joining_mints_the_servers_credential(make_agent, tmp_path):
    tenants = write_tenants(tmp_path / "tenants.json", {})
    node = make_agent(
        host="127.0.0.2", token=OPERATOR, extra=(*CALM, f"--AgentApp.tenants_file={tenants}")
    )
    where = tmp_path / "server"
    where.mkdir()
    server = ServerProcess(where, [], join_token="join-me", tenant_name="team-x").start()
    try:
        base = server.url.removesuffix("/remote/api")

        async def join_until_healthy():
            joining = asyncio.ensure_future(
                keep_joined(base, "join-me", node.url, OPERATOR, tenants_file=tenants)
            )
            try:
                for _ in range(150):
                    await asyncio.sleep(0.2)
                    nodes = (await asyncio.to_thread(server.get, "nodes"))["nodes"]
                    if nodes and nodes[0]["state"] in ("healthy", "busy"):
                        return nodes[0]
                raise AssertionError(f"the node did not turn healthy: {nodes}")
            finally:
                joining.cancel()

        joined = asyncio.run(join_until_healthy())
        assert joined["url"] == node.url
        with open(tenants) as fh:
            minted = json.load(fh)["tenants"]["team-x"]["token"]
        assert minted != OPERATOR and len(minted) >= 32
        assert os.stat(tenants).st_mode & 0o777 == 0o600
        who = requests.get(
            node.url + "/v1/whoami", headers={"Authorization": f"Bearer {minted}"}, timeout=30
        ).json()
        assert who["tenant"] == "team-x" and not who["operator"]
        # the operator token never left the agent's host: the server holds the tenant's
        store = (where / "remote.sqlite").read_bytes() + b"".join(
            p.read_bytes() for p in where.glob("remote.sqlite-*")
        )
        assert OPERATOR.encode() not in store and minted.encode() in store
    finally:
        server.stop()


def test_an_agent_joining_with_a_tenants_file_sends_its_minted_token(make_agent, tmp_path):
    """The whole flow from the command line: `agent --join URL --join-token T` with a
    tenants file joins as the server's tenant, never with the operator token."""
    tenants = write_tenants(tmp_path / "tenants.json", {})
    where = tmp_path / "server"
    where.mkdir()
    server = ServerProcess(where, [], join_token="join-me", tenant_name="team-y").start()
    try:
        base = server.url.removesuffix("/remote/api")
        make_agent(
            host="127.0.0.3",
            token=OPERATOR,
            extra=(
                *CALM,
                f"--AgentApp.tenants_file={tenants}",
                "--join",
                base,
                "--join-token",
                "join-me",
            ),
        )
        server.wait_for(
            lambda: [n["state"] for n in server.get("nodes")["nodes"]] in (["healthy"], ["busy"]),
            60,
        )
        with open(tenants) as fh:
            minted = json.load(fh)["tenants"]["team-y"]["token"]
        store = (where / "remote.sqlite").read_bytes() + b"".join(
            p.read_bytes() for p in where.glob("remote.sqlite-*")
        )
        assert OPERATOR.encode() not in store and minted.encode() in store
    finally:
        server.stop()
