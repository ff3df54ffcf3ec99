"""Retention and paginated listings, with a real agent, a real Jupyter server and Docker.

A 1 MB / 60 s policy on the agent with 2,000 cheap cells (`true` through the runner of four
python sessions): the data dir ends under the cap, a long cell running all along is
untouched, an old id answers 404 `expired` and is refused for a second run. Listings are
walked page by page while new records arrive: each older record once, none twice.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from processes import data_dir_bytes
from server_process import ServerProcess

PYTHON = "jupyter-remote/python:local"
CAP = 1_000_000
POLICY = (
    "--retention-max-bytes",
    str(CAP),
    "--retention-max-age",
    "60",
    "--retention-min-age",
    "1",
    "--retention-interval",
    "0.5",
)
OFF = ("--retention-max-bytes", "0", "--retention-max-age", "0")

pytestmark = pytest.mark.docker


def get(url: str, token: str, **params) -> requests.Response:
    return requests.get(
        url, params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def run_many(client, ids: list[str], sessions: list[str]) -> None:
    def one(i: int) -> None:
        events = list(client.execute_stream(ids[i], command="true", session_id=sessions[i % 4]))
        assert events[-1]["status"] == "completed", events[-1]

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(len(ids))))


def sessions_on(client, image: str = PYTHON) -> list[str]:
    sids = [f"s-{uuid.uuid4().hex[:8]}" for _ in range(4)]
    for sid in sids:
        client.create_session(session_id=sid, image=image, memory="256m")
    return sids


def test_agent_keeps_its_data_dir_under_the_cap(make_agent):
    agent = make_agent(extra=POLICY)
    client = agent.client
    sids = sessions_on(client)
    long_sid = f"s-{uuid.uuid4().hex[:8]}"
    client.create_session(session_id=long_sid, image=PYTHON, memory="256m")
    long_id = f"long-{uuid.uuid4().hex[:8]}"
    long_events: list[dict] = []
    runner = threading.Thread(
        target=lambda: long_events.extend(
            client.execute_stream(
                long_id, command="echo begun; sleep 300; echo ended", session_id=long_sid
            )
        )
    )
    runner.start()
    ids = [f"r-{i:05d}-{uuid.uuid4().hex[:6]}" for i in range(2000)]
    t0 = time.monotonic()
    run_many(client, ids, sids)
    took = time.monotonic() - t0
    # a pass after the last cell is past its min age (on a loaded machine, a later one)
    deadline = time.monotonic() + 12
    used = data_dir_bytes(agent.data_dir)
    while used > CAP and time.monotonic() < deadline:
        time.sleep(0.5)
        used = data_dir_bytes(agent.data_dir)
    assert used <= CAP, f"data dir holds {used} bytes after 2,000 cells ({took:.0f} s)"

    running = client.execution(long_id)
    assert running["status"] == "running", running
    gone = get(f"{agent.url}/v1/executions/{ids[0]}", agent.token)
    assert gone.status_code == 404, gone.text
    body = gone.json()
    assert body["reason"] == "expired" and body["status"] == "completed", body
    assert body["returncode"] == 0 and body["expired_at"] >= body["finished_at"]
    events = get(f"{agent.url}/v1/executions/{ids[0]}/events", agent.token)
    assert events.status_code == 404 and events.json()["reason"] == "expired"
    again = requests.post(
        f"{agent.url}/v1/executions",
        json={"execution_id": ids[0], "command": "echo twice", "session_id": sids[0]},
        headers={"Authorization": f"Bearer {agent.token}"},
        timeout=30,
    )
    assert again.status_code == 409 and again.json()["reason"] == "duplicate_execution"
    # the newest ones are still there in full
    assert client.execution(ids[-1])["status"] == "completed"

    # it ran through every pass untouched (however long 2,000 cells took); now end it
    client.cancel(long_id)
    runner.join(60)
    assert long_events[-1]["status"] == "cancelled", long_events[-1]
    out = "".join(e.get("data", "") for e in long_events if e["event"] == "stdout")
    assert out == "begun\n"


def test_agent_expires_finished_jobs_never_running_ones(make_agent):
    agent = make_agent(
        extra=(
            "--retention-max-age",
            "1",
            "--retention-min-age",
            "0",
            "--retention-interval",
            "0.3",
        )
    )
    client = agent.client
    quick = client.submit_job(job_id=f"jq-{uuid.uuid4().hex[:6]}", command="echo hi")
    slow = client.submit_job(job_id=f"js-{uuid.uuid4().hex[:6]}", command="sleep 8")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        gone = get(f"{agent.url}/v1/jobs/{quick['job_id']}", agent.token)
        if gone.status_code == 404:
            break
        time.sleep(0.2)
    assert gone.status_code == 404 and gone.json()["reason"] == "expired", gone.text
    assert gone.json()["status"] == "completed"
    logs = get(f"{agent.url}/v1/jobs/{quick['job_id']}/logs", agent.token)
    assert logs.status_code == 404 and logs.json()["reason"] == "expired"
    assert not os.path.exists(os.path.join(agent.data_dir, "jobs", quick["job_id"]))
    assert client.job(slow["job_id"])["status"] == "running"  # seconds past max-age
    again = requests.post(
        f"{agent.url}/v1/jobs",
        json={"job_id": quick["job_id"], "command": "echo again"},
        headers={"Authorization": f"Bearer {agent.token}"},
        timeout=30,
    )
    assert again.status_code == 409 and again.json()["reason"] == "duplicate_job"
    listed = get(f"{agent.url}/v1/jobs", agent.token).json()["jobs"]
    assert [j["job_id"] for j in listed] == [slow["job_id"]]


def walk(fetch, limit: int) -> list[dict]:
    """Every page of a listing through its `next` cursors."""
    items, cursor, pages = [], None, 0
    while True:
        page = fetch(limit, cursor)
        items += page["items"]
        cursor = page["next"]
        pages += 1
        assert pages < 1000
        if cursor is None:
            return items


def test_agent_listing_walks_every_record_once_while_new_ones_arrive(make_agent):
    agent = make_agent(extra=OFF)
    client = agent.client
    sids = sessions_on(client)
    before = [f"p-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(240)]
    run_many(client, before, sids)
    later = [f"q-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(80)]
    arriving = threading.Thread(target=run_many, args=(client, later, sids))
    arriving.start()

    def fetch(limit, cursor):
        params = {"limit": limit, **({"before": cursor} if cursor else {})}
        resp = get(f"{agent.url}/v1/executions", agent.token, **params)
        assert resp.status_code == 200, resp.text
        time.sleep(0.05)  # let new ones land between pages
        return {"items": resp.json()["executions"], "next": resp.json()["next"]}

    seen = walk(fetch, 25)
    arriving.join(120)
    ids = [e["execution_id"] for e in seen]
    assert len(ids) == len(set(ids)), "a record was listed twice"
    assert set(before) <= set(ids), f"missing: {sorted(set(before) - set(ids))[:5]}"
    keys = [(e["started_at"], e["execution_id"]) for e in seen]
    assert keys == sorted(keys, reverse=True)

    jobs = get(f"{agent.url}/v1/jobs", agent.token, limit=5)
    assert jobs.status_code == 200 and jobs.json()["next"] is None
    for params, reason in [
        ({"limit": "0"}, "bad_limit"),
        ({"limit": "1001"}, "bad_limit"),
        ({"limit": "ten"}, "bad_limit"),
        ({"limit": "1e3"}, "bad_limit"),
        ({"before": "yesterday"}, "bad_before"),
        ({"before": "1.5~a/b"}, "bad_before"),
        ({"colour": "red"}, "bad_colour"),
    ]:
        for path in ("executions", "jobs"):
            resp = get(f"{agent.url}/v1/{path}", agent.token, **params)
            assert resp.status_code == 400, (path, params, resp.text)
            assert resp.json()["reason"] == reason, resp.json()


@pytest.fixture
def server(tmp_path, make_agent):
    agent = make_agent(host="127.0.0.9")
    srv = ServerProcess(
        tmp_path,
        [agent],
        retention_max_bytes=60_000,
        retention_max_age=60.0,
        retention_min_age=0.5,
        retention_interval=0.3,
    ).start()
    srv.agent = agent
    yield srv
    srv.stop()


def post_cell(server: ServerProcess, execution_id: str, owner: str) -> requests.Response:
    return requests.post(
        f"{server.url}/executions",
        json={"execution_id": execution_id, "command": "true", "owner": owner, "image": PYTHON},
        headers={"Authorization": f"token {server.token}"},
        timeout=60,
    )


def test_server_store_keeps_under_its_cap_and_pages_through_sqlite(server, tmp_path):
    owners = [f"o-{uuid.uuid4().hex[:6]}" for _ in range(4)]
    ids = [f"v-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(300)]
    job = server.post("jobs", body={"command": "echo job", "image": PYTHON})
    server.wait_for(lambda: server.get("jobs", job["job_id"])["status"] == "completed", 30)
    server.wait_for(lambda: server.get("status")["jobs"] == 0, 5)  # ended: out of memory
    assert server.get("jobs", job["job_id"])["status"] == "completed"  # from SQLite

    def one(i: int) -> None:
        resp = post_cell(server, ids[i], owners[i % 4])
        assert resp.status_code == 200, resp.text
        last = json.loads(resp.text.strip().splitlines()[-1])
        assert last["status"] == "completed", last

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(len(ids))))
    time.sleep(1.5)
    status = server.get("status")
    assert status["executions"] == 0, status  # nothing live is left in memory
    assert status["retention"]["removed"] >= 0
    kept = walk(lambda limit, cursor: _server_page(server, limit, cursor), 40)
    kept_bytes = sum(len(json.dumps(r, separators=(",", ":"))) for r in kept)
    assert kept_bytes <= 60_000 and 0 < len(kept) < len(ids), (len(kept), kept_bytes)
    db = tmp_path / "remote.sqlite"
    assert db.stat().st_size < 1_000_000

    # the last one removed: its expired row is among the newest (the oldest expired rows
    # are pruned in turn once they pass their share of the cap)
    kept_ids = {r["execution_id"] for r in kept}
    last_gone = max(i for i, x in enumerate(ids) if x not in kept_ids)
    gone = requests.get(
        f"{server.url}/executions/{ids[last_gone]}",
        headers={"Authorization": f"token {server.token}"},
        timeout=30,
    )
    assert gone.status_code == 404, gone.text
    assert gone.json()["reason"] == "expired" and gone.json()["status"] == "completed"
    again = post_cell(server, ids[last_gone], owners[last_gone % 4])
    assert again.status_code == 409 and again.json()["reason"] == "duplicate_execution"
    gone_job = requests.get(
        f"{server.url}/jobs/{job['job_id']}",
        headers={"Authorization": f"token {server.token}"},
        timeout=30,
    )
    assert gone_job.status_code == 404 and gone_job.json()["reason"] == "expired", gone_job.text
    resubmit = requests.post(
        f"{server.url}/jobs",
        json={"job_id": job["job_id"], "command": "echo again", "image": PYTHON},
        headers={"Authorization": f"token {server.token}"},
        timeout=30,
    )
    assert resubmit.status_code == 409 and resubmit.json()["reason"] == "duplicate_job"

    # a walk while new cells arrive: no record twice, newest first, and what it does not
    # list was removed by retention meanwhile (404 expired), never skipped
    existing = {r["execution_id"] for r in kept}
    more = [f"w-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(60)]
    arriving = threading.Thread(
        target=lambda: [post_cell(server, m, owners[0]) for m in more], daemon=True
    )
    arriving.start()
    seen = walk(lambda limit, cursor: _server_page(server, limit, cursor, pause=0.2), 10)
    arriving.join(120)
    seen_ids = [r["execution_id"] for r in seen]
    assert len(seen_ids) == len(set(seen_ids))
    keys = [(r["created_at"], r["execution_id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    for missing in existing - set(seen_ids):
        resp = requests.get(
            f"{server.url}/executions/{missing}",
            headers={"Authorization": f"token {server.token}"},
            timeout=30,
        )
        # gone, not skipped; its expired row may itself be gone already: those rows are
        # held to half of this tiny policy's bytes, oldest first, and many go in a walk
        assert resp.status_code == 404, resp.text
        assert resp.json()["reason"] in ("expired", "execution_not_found"), resp.text

    for params in ({"limit": "0"}, {"before": "x"}, {"kernel_id": "../etc"}, {"x": "1"}):
        for path in ("executions", "jobs"):
            resp = requests.get(
                f"{server.url}/{path}",
                params=params,
                headers={"Authorization": f"token {server.token}"},
                timeout=30,
            )
            assert resp.status_code == 400, (path, params, resp.text)


def _server_page(server, limit, cursor, pause=0.0):
    params = {"limit": limit, **({"before": cursor} if cursor else {})}
    got = server.get("executions", **params)
    time.sleep(pause)
    return {"items": got["executions"], "next": got["next"]}
