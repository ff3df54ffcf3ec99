"""Tenants on one real agent against the real Docker engine: two tenants and the operator.

For every route of the agent's route table (enumerated from routes.ROUTES, every method its
handler serves), tenant B's credential on tenant A's (or the operator's) session, execution,
job, log and files gets the very 404 of an id never used, and A's objects are unchanged
afterwards; lists show each tenant its own, the operator everything; quotas refuse with a
clear 403 and create nothing (containers counted with docker-py), under concurrent requests
too; jobs asking what no node can give are refused at the edge (400); ownership survives a
kill -9 and restart; a tenant added to the file works within a second.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from tornado import web

from conftest import BUSYBOX, new_id
from jupyter_remote.agent.tenants import write_tenant
from jupyter_remote.agent.web.routes import ROUTES

CALM = ("--AgentApp.cpu_max=100", "--AgentApp.memory_max=100", "--warm-pool-size", "0")
OPERATOR = "t0ken"
ALICE, BOB = "alice-token-1234", "bob-token-5678"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
ID = "([^/]+)"


def tenants_file(tmp_path, **quotas) -> str:
    path = str(tmp_path / "tenants.json")
    doc = {"tenants": {"alice": {"token": ALICE}, "bob": {"token": BOB}}}
    if quotas:
        doc["tenants"]["alice"]["quota"] = quotas
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    return path


def call(node, method: str, path: str, token: str, **kw) -> requests.Response:
    kw.setdefault("timeout", 60)
    return requests.request(
        method, node.url + path, headers={"Authorization": f"Bearer {token}"}, **kw
    )


def ok(resp: requests.Response, status: int = 200) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()


def run_cell(node, token: str, **body) -> dict:
    """Run an execution to its end; its exit event."""
    resp = call(node, "POST", "/v1/executions", token, json=body)
    assert resp.status_code == 200, resp.text
    events = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    return events[-1]


def start_job(node, token: str, job_id: str, command: str, **extra) -> dict:
    body = {"job_id": job_id, "image": BUSYBOX, "command": command, **extra}
    return ok(call(node, "POST", "/v1/jobs", token, json=body), 201)


def a_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("planted.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    return buf.getvalue()


def methods_of(handler) -> list[str]:
    """The methods a handler serves (those it defines over tornado's defaults)."""
    return [
        m
        for m in METHODS
        if getattr(handler, m.lower()) is not getattr(web.RequestHandler, m.lower())
    ]


def kind_of(pattern: str) -> str:
    return {"sessions": "session", "executions": "execution", "jobs": "job"}[pattern.split("/")[2]]


def request_for(method: str, pattern: str) -> dict:
    """Query and body a route takes, so that only the id decides the answer."""
    kw: dict = {}
    if pattern.endswith("/files"):
        kw["params"] = {"path": "/tmp"}
        if method == "PUT":
            kw["data"] = a_tar()
            kw["headers"] = {"Content-Type": "application/x-tar"}
    elif pattern.endswith("/logs"):
        kw["params"] = {"task": "0"}
    elif pattern.endswith("/outputs"):
        kw["params"] = {"task": "0", "path": "out.txt"}
    elif method == "POST":
        kw["json"] = {}
    return kw


def same_404(node, method: str, pattern: str, foreign: str, token: str) -> None:
    """`token` on `foreign` answers exactly what it answers for an id never used."""
    never = new_id("never")
    kw = request_for(method, pattern)
    headers = {**kw.pop("headers", {})}
    got = {}
    for oid in (foreign, never):
        path = pattern.replace(ID, oid)
        resp = requests.request(
            method,
            node.url + path,
            headers={"Authorization": f"Bearer {token}", **headers},
            timeout=60,
            **kw,
        )
        got[oid] = (resp.status_code, resp.reason, resp.text.replace(oid, "ID"))
    assert got[foreign][0] == 404, (method, pattern, got[foreign])
    assert got[foreign] == got[never], (method, pattern, got)


def test_every_route_hides_other_tenants_objects(make_agent, docker_client, tmp_path):
    gpus = ("--AgentApp.gpus_visible=0,1,2,3", "--AgentApp.gpu_mode=env")
    node = make_agent(
        token=OPERATOR,
        extra=(*CALM, *gpus, "--AgentApp.tenants_file=" + tenants_file(tmp_path)),
    )
    # alice: a session (with a GPU) with a running cell and a finished one, a running job
    sid = new_id("sa")
    body = {"session_id": sid, "image": BUSYBOX, "gpus": 1}
    ok(call(node, "POST", "/v1/sessions", ALICE, json=body), 201)
    done = new_id("xa")
    assert (
        run_cell(node, ALICE, execution_id=done, session_id=sid, command="echo hi")["status"]
        == "completed"
    )
    running = new_id("xr")
    stream = call(
        node,
        "POST",
        "/v1/executions",
        ALICE,
        json={"execution_id": running, "session_id": sid, "command": "sleep 60"},
        stream=True,
    )
    job = new_id("ja")
    start_job(node, ALICE, job, "sleep 60")
    # the operator's own session, which no tenant may see either
    op_sid = new_id("so")
    ok(
        call(node, "POST", "/v1/sessions", OPERATOR, json={"session_id": op_sid, "image": BUSYBOX}),
        201,
    )
    deadline = time.monotonic() + 20
    while ok(call(node, "GET", f"/v1/executions/{running}", ALICE))["status"] != "running":
        assert time.monotonic() < deadline

    whoami = ok(call(node, "GET", "/v1/whoami", BOB))
    assert whoami["tenant"] == "bob" and whoami["operator"] is False
    assert ok(call(node, "GET", "/v1/whoami", OPERATOR))["operator"] is True
    assert call(node, "GET", "/v1/whoami", "wrong-token-0000").status_code == 401

    ids = {"session": [sid, op_sid], "execution": [done, running], "job": [job]}
    every = {(p.replace("/?", ""), m) for p, h in ROUTES for m in methods_of(h)}
    checked = set()
    for pattern, handler in ROUTES:
        for method in methods_of(handler):
            if ID in pattern:
                for foreign in ids[kind_of(pattern)]:
                    same_404(node, method, pattern, foreign, BOB)
                checked.add((pattern, method))
                continue
            path = pattern.replace("/?", "")
            if method == "GET":  # node routes and lists: 200, and nothing of alice's in them
                resp = call(node, "GET", path, BOB)
                assert resp.status_code == 200, (path, resp.text)
                for oid in (sid, op_sid, done, running, job):
                    assert oid not in resp.text, (path, oid)
                checked.add((path, method))

    # creates that name alice's objects: the run-once 409 names no one; cells in her
    # session: the unknown session's 404
    for path, body in (
        ("/v1/sessions", {"session_id": sid, "image": BUSYBOX}),
        ("/v1/jobs", {"job_id": job, "image": BUSYBOX, "command": "true"}),
        ("/v1/executions", {"execution_id": done, "command": "true"}),
    ):
        resp = call(node, "POST", path, BOB, json=body)
        assert resp.status_code == 409, resp.text
        assert set(resp.json()) == {"message", "reason"}, resp.text
        assert "already used" in resp.json()["message"] and "alice" not in resp.text
        checked.add((path, "POST"))
    for path in ("/v1/executions", "/execute"):
        eid = {"execution_id": new_id("xb")} if path == "/v1/executions" else {}
        mine = call(
            node, "POST", path, BOB, json={**eid, "session_id": sid, "command": "touch /tmp/x"}
        )
        never = call(
            node, "POST", path, BOB, json={**eid, "session_id": "never-1", "command": "true"}
        )
        assert mine.status_code == 404, mine.text
        assert mine.json() == json.loads(never.text.replace("never-1", sid))
        checked.add((path, "POST"))
    assert checked == every, every - checked

    # alice's objects are as they were; lists: each its own, the operator everything
    assert ok(call(node, "GET", f"/v1/executions/{running}", ALICE))["status"] == "running"
    assert ok(call(node, "GET", f"/v1/jobs/{job}", ALICE))["status"] == "running"
    assert ok(call(node, "GET", f"/v1/sessions/{sid}", ALICE))["tenant"] == "alice"
    listing = call(node, "GET", f"/v1/sessions/{sid}/files", ALICE, params={"path": "/tmp"})
    assert listing.status_code == 200 and b"planted" not in listing.content
    assert ok(call(node, "GET", f"/v1/sessions/{op_sid}", OPERATOR))["tenant"] is None

    def listed(token: str) -> set[str]:
        out = {s["session_id"] for s in ok(call(node, "GET", "/v1/sessions", token))["sessions"]}
        out |= {
            e["execution_id"] for e in ok(call(node, "GET", "/v1/executions", token))["executions"]
        }
        out |= {j["job_id"] for j in ok(call(node, "GET", "/v1/jobs", token))["jobs"]}
        feed = ok(call(node, "GET", "/v1/jobs", token, params={"since": "0"}))
        return out | {j["job_id"] for j in feed["jobs"]}

    assert listed(BOB) == set()
    assert listed(ALICE) == {sid, done, running, job}
    assert listed(OPERATOR) >= {sid, op_sid, done, running, job}
    deadline = time.monotonic() + 15  # own_containers is sampled in the background
    while not {sid, op_sid} <= {
        c["session_id"] for c in ok(call(node, "GET", "/v1/resources", OPERATOR))["own_containers"]
    }:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    held = ok(call(node, "GET", "/v1/resources", BOB))["own_containers"]
    assert held == [], held
    mine = {
        c["session_id"] for c in ok(call(node, "GET", "/v1/resources", ALICE))["own_containers"]
    }
    assert sid in mine and op_sid not in mine

    def holders(token: str) -> list[str]:
        gpus = ok(call(node, "GET", "/v1/resources", token))["gpus"]
        assert gpus["free"] == 3, gpus  # a device held by someone else is still not free
        return [h for d in gpus["devices"] for h in d["held_by"]]

    assert holders(BOB) == [] and holders(ALICE) == holders(OPERATOR) == [f"session:{sid}"]
    assert ok(call(node, "GET", "/v1/whoami", ALICE))["use"]["gpus"] == 1

    # the operator acts on anything: it stops alice's job and cancels her cell
    ok(call(node, "POST", f"/v1/executions/{running}/cancel", OPERATOR, json={}))
    ok(call(node, "POST", f"/v1/jobs/{job}/stop", OPERATOR))
    stream.close()


def test_ownership_survives_a_restart_and_new_tenants_need_no_restart(make_agent, tmp_path):
    path = tenants_file(tmp_path)
    node = make_agent(token=OPERATOR, extra=(*CALM, "--AgentApp.tenants_file=" + path))
    sid, eid, job = new_id("sa"), new_id("xa"), new_id("ja")
    ok(call(node, "POST", "/v1/sessions", ALICE, json={"session_id": sid, "image": BUSYBOX}), 201)
    run_cell(node, ALICE, execution_id=eid, session_id=sid, command="true")
    start_job(node, ALICE, job, "true")
    node.kill9()
    node.start()
    for route in (f"/v1/sessions/{sid}", f"/v1/executions/{eid}", f"/v1/jobs/{job}"):
        assert ok(call(node, "GET", route, ALICE))["tenant"] == "alice"
        assert call(node, "GET", route, BOB).status_code == 404

    # /execute's default session is per tenant; one squatted by another is never used
    ok(
        call(node, "POST", "/v1/sessions", BOB, json={"session_id": "default", "image": BUSYBOX}),
        201,
    )
    squatted = call(node, "POST", "/execute", OPERATOR, json={"command": "true"})
    assert squatted.status_code == 409 and "give a session_id" in squatted.text, squatted.text
    assert (
        ok(call(node, "POST", "/execute", ALICE, json={"command": "echo hi"}))["output"] == "hi\n"
    )
    assert ok(call(node, "GET", "/v1/sessions/default:alice", ALICE))["tenant"] == "alice"

    carol = "carol-token-9012"
    assert call(node, "GET", "/v1/whoami", carol).status_code == 401
    write_tenant(path, "carol", carol, {"sessions": 1})
    deadline = time.monotonic() + 5
    while (resp := call(node, "GET", "/v1/whoami", carol)).status_code != 200:
        assert time.monotonic() < deadline, resp.text
        time.sleep(0.2)
    assert resp.json()["tenant"] == "carol" and resp.json()["quota"] == {"sessions": 1}
    assert call(node, "GET", f"/v1/sessions/{sid}", carol).status_code == 404


def sessions_of(node, docker_client) -> int:
    return len(node.containers(docker_client, kind="session"))


def test_quotas_refuse_clearly_and_create_nothing(make_agent, docker_client, tmp_path):
    path = tenants_file(tmp_path, sessions=2, cpus=1.5, memory="1g", gpus=1)
    node = make_agent(
        token=OPERATOR,
        extra=(*CALM, "--AgentApp.tenants_file=" + path, "--AgentApp.gpus_visible=0,1,2,3"),
    )
    body = {"image": BUSYBOX, "cpus": 0.5, "memory": "256m"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda i: call(
                    node,
                    "POST",
                    "/v1/sessions",
                    ALICE,
                    json={**body, "session_id": f"q{i}-{new_id()}"},
                ),
                range(8),
            )
        )
    made = [r for r in answers if r.status_code == 201]
    refused = [r for r in answers if r.status_code != 201]
    assert len(made) == 2, [r.text for r in answers]
    for r in refused:
        assert r.status_code == 403, r.text
        answer = r.json()
        assert answer["reason"] == "quota_exceeded" and answer["quota"] == "sessions", answer
        assert (
            answer["message"]
            == "tenant alice: quota sessions 2 exceeded: 2 in use, this session asks 1"
        )
    assert sessions_of(node, docker_client) == 2

    who = ok(call(node, "GET", "/v1/whoami", ALICE))
    assert who["use"] == {"sessions": 2, "cpus": 1.0, "memory": 512 << 20, "gpus": 0}, who
    before = len(node.containers(docker_client))
    # cpus: 1 of 1.5 in use, a fresh cell asking 1 more
    resp = call(
        node,
        "POST",
        "/v1/executions",
        ALICE,
        json={"execution_id": new_id(), "command": "true", "cpus": 1, "memory": "64m"},
    )
    assert resp.status_code == 403, resp.text
    assert (
        resp.json()["message"]
        == "tenant alice: quota cpus 1.5 exceeded: 1 in use, this execution asks 1"
    )
    # memory: 0.5 GiB of 1 in use, a job asking 0.75 GiB; nothing recorded
    job = new_id("jq")
    resp = call(
        node,
        "POST",
        "/v1/jobs",
        ALICE,
        json={"job_id": job, "image": BUSYBOX, "command": "true", "cpus": 0.1, "memory": "768m"},
    )
    assert resp.status_code == 403, resp.text
    assert (
        resp.json()["quota"] == "memory"
        and "0.50 GiB in use, this job asks 0.75 GiB" in resp.json()["message"]
    )
    assert call(node, "GET", f"/v1/jobs/{job}", ALICE).status_code == 404
    # gpus: a quota of 1, a cell asking 2 (of the node's 4 free)
    resp = call(
        node,
        "POST",
        "/v1/executions",
        ALICE,
        json={"execution_id": new_id(), "command": "true", "cpus": 0.1, "memory": "64m", "gpus": 2},
    )
    assert resp.status_code == 403 and resp.json()["quota"] == "gpus", resp.text
    assert ok(call(node, "GET", "/v1/resources", OPERATOR))["gpus"]["free"] == 4
    assert len(node.containers(docker_client)) == before
    assert ok(call(node, "GET", "/v1/executions", ALICE))["executions"] == []
    # a later task is checked when its turn comes: 1 cpu in use, task 1 asks 0.6 more
    job = new_id("jl")
    tasks = [
        {"command": "sleep 1", "cpus": 0.1, "memory": "64m"},
        {"command": "true", "cpus": 0.6, "memory": "64m"},
    ]
    later = {"job_id": job, "image": BUSYBOX, "parallelism": 1, "tasks": tasks}
    ok(call(node, "POST", "/v1/jobs", ALICE, json=later), 201)
    deadline = time.monotonic() + 30
    while (got := ok(call(node, "GET", f"/v1/jobs/{job}", ALICE)))["status"] == "running":
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    assert got["tasks"][0]["status"] == "completed", got
    assert got["tasks"][1]["status"] == "failed", got
    assert got["tasks"][1]["message"] == (
        "not started: tenant alice: quota cpus 1.5 exceeded: 1 in use, this task asks 0.6"
    )
    # bob has no quota; the operator none either
    ok(call(node, "POST", "/v1/sessions", BOB, json={**body, "cpus": 2}), 201)


@pytest.mark.parametrize("too_much", [{"cpus": 1000}, {"memory": "100000g"}])
def test_jobs_no_node_can_give_are_refused_at_the_edge(
    make_agent, docker_client, tmp_path, too_much
):
    node = make_agent(token=OPERATOR, extra=CALM)
    before = len(node.containers(docker_client))
    execution = call(
        node,
        "POST",
        "/v1/executions",
        OPERATOR,
        json={"execution_id": new_id(), "command": "true", **too_much},
    )
    job = new_id("jx")
    resp = call(
        node, "POST", "/v1/jobs", OPERATOR, json={"job_id": job, "command": "true", **too_much}
    )
    assert execution.status_code == 400 and resp.status_code == 400, (execution.text, resp.text)
    assert resp.json()["reason"] == execution.json()["reason"]
    assert resp.json()["message"] == "task 0: " + execution.json()["message"]
    assert re.search(r"more than this node's", resp.json()["message"]), resp.text
    assert call(node, "GET", f"/v1/jobs/{job}", OPERATOR).status_code == 404
    assert len(node.containers(docker_client)) == before


def test_the_tenants_file_is_checked_with_clear_errors(tmp_path, capsys):
    from jupyter_remote.agent.tenants import Credentials, TenantsFileError, load_tenants

    path = tmp_path / "t.json"
    cases = [
        ("{", "is not JSON"),
        ('{"tenants": {"a b": {"token": "abcdefgh1"}}}', "tenants.a b"),
        ('{"tenants": {"a": {"token": "short"}}}', "tenants.a.token"),
        ('{"tenants": {"a": {"token": "abcdefgh1", "quota": {"cpus": -1}}}}', "quota.cpus"),
        ('{"tenants": {"a": {"token": "abcdefgh1", "quota": {"memory": "lots"}}}}', "memory"),
        ('{"tenants": {"a": {"token": "abcdefgh1", "quota": {"disk": 1}}}}', "quota.disk"),
        ('{"tenants": {"a": {"token": "t0kent0ken"}}}', "same token as the operator's"),
    ]
    for text, words in cases:
        path.write_text(text)
        os.chmod(path, 0o600)
        with pytest.raises(TenantsFileError) as err:
            load_tenants(str(path), "t0kent0ken")
        assert words in str(err.value) and str(path) in str(err.value), (text, err.value)
    with pytest.raises(TenantsFileError, match="cannot read the tenants file"):
        load_tenants(str(tmp_path / "missing.json"))
    later = tmp_path / "later.json"  # missing at start (the join flow writes it): no tenants
    creds = Credentials("", str(later))
    assert creds.resolve("abcdefgh1") == (False, None) and creds.resolve(None) == (False, None)
    later.write_text('{"tenants": {"a": {"token": "abcdefgh1"}}}')
    creds.reload(force=True)
    assert creds.resolve("abcdefgh1") == (True, "a")

    path.write_text('{"tenants": {"a": {"token": "abcdefgh1", "quota": {"memory": "1g"}}}}')
    os.chmod(path, 0o644)
    creds = Credentials("operator-token", str(path))
    assert "readable by others" in capsys.readouterr().err
    assert creds.quota("a") == {"memory": 1 << 30}
    assert creds.resolve("abcdefgh1") == (True, "a")
    assert creds.resolve("operator-token") == (True, None)
    assert creds.resolve("abcdefgh") == (False, None)
    assert creds.resolve(None) == (False, None)
    assert Credentials().resolve(None) == (True, None)  # no token, no file: loopback dev mode


def test_gone_records_are_told_to_their_owner_only(make_agent, tmp_path):
    """Expired by retention (the ledger), deleted, or reaped for idleness (tombstones):
    the owner hears how it ended, another tenant the unknown id's 404."""
    retention = ("--retention-max-age", "1", "--retention-min-age", "1")
    node = make_agent(
        token=OPERATOR,
        extra=(
            *CALM,
            *retention,
            "--retention-interval",
            "0.3",
            "--AgentApp.tenants_file=" + tenants_file(tmp_path),
        ),
    )
    eid, job, deleted, sid = new_id("xg"), new_id("jg"), new_id("jd"), new_id("sg")
    run_cell(node, ALICE, execution_id=eid, command="true")
    start_job(node, ALICE, job, "true")
    body = {"session_id": sid, "image": BUSYBOX, "idle_timeout": 1}
    ok(call(node, "POST", "/v1/sessions", ALICE, json=body), 201)
    gone = {
        f"/v1/executions/{ID}": (eid, "expired"),
        f"/v1/jobs/{ID}": (job, "expired"),
        f"/v1/sessions/{ID}": (sid, "session_expired"),
    }
    deadline = time.monotonic() + 30
    for pattern, (oid, reason) in gone.items():
        while (resp := call(node, "GET", pattern.replace(ID, oid), ALICE)).status_code != 404:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.2)
        assert resp.json()["reason"] == reason and resp.json()["tenant"] == "alice", resp.text
        same_404(node, "GET", pattern, oid, BOB)
    same_404(node, "GET", f"/v1/executions/{ID}/events", eid, BOB)
    same_404(node, "GET", f"/v1/jobs/{ID}/logs", job, BOB)
    # a deleted job: "(it was deleted)" for alice only (unless retention took it first,
    # which is told alike)
    start_job(node, ALICE, deleted, "true")
    while ok(call(node, "GET", f"/v1/jobs/{deleted}", ALICE))["status"] != "completed":
        time.sleep(0.1)
    resp = call(node, "DELETE", f"/v1/jobs/{deleted}", ALICE)
    if resp.status_code == 200:
        mine = call(node, "GET", f"/v1/jobs/{deleted}", ALICE).json()
        assert "deleted" in mine["message"] or mine["reason"] == "expired", mine
        same_404(node, "GET", f"/v1/jobs/{ID}", deleted, BOB)
    # run-once ids: the owner hears of its record, another tenant only "already used"
    again = {"execution_id": eid, "command": "true"}
    assert (
        call(node, "POST", "/v1/executions", ALICE, json=again).json()["execution"]["tenant"]
        == "alice"
    )
    theirs = call(node, "POST", "/v1/executions", BOB, json=again)
    assert theirs.status_code == 409 and set(theirs.json()) == {"message", "reason"}, theirs.text
