"""Run-once promises through the server: one id runs once under concurrency, and a stream
ends in exactly one exit event, the true one, wherever the link to the agent breaks."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid

import pytest
from tornado.httpclient import HTTPClientError

from conftest import BUSYBOX
from server_fixtures import (
    FAST,
    CuttableProxy,
    agents,
    api,
    execute,
    jp_server_config,
    node_config,
    remote_started,
    until,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["agents", "jp_server_config", "remote_started"]

END = b"0\r\n\r\n"  # the end of a chunked HTTP body


class TailCutProxy(CuttableProxy):
    """Forwards to an agent, but cuts a streamed (chunked) response `cut_at` bytes before its
    end and closes the connection: the last bytes never arrive."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.6") -> None:
        self.cut_at = 0
        self.cuts = 0
        super().__init__(*target, host=host)

    def _back(self, upstream: socket.socket, client: socket.socket) -> None:
        held = b""
        seen = b""  # the last bytes too: a header may straddle two reads
        chunked = False  # only a streamed response is held back and cut
        try:
            while data := upstream.recv(65536):
                seen = seen[-64:] + data.lower()
                chunked = chunked or b"transfer-encoding: chunked" in seen
                if not (self.cut_at and chunked):
                    client.sendall(data)
                    continue
                held += data
                if held.endswith(END):
                    # counted before sending: the server may already have closed its end
                    # after reading the exit event (then the tail is withheld all the same)
                    self.cuts += 1
                    client.sendall(held[: len(held) - self.cut_at])
                    break
                if len(held) > 16:  # keep back only what could be the end
                    client.sendall(held[:-16])
                    held = held[-16:]
        except OSError:
            pass
        for sock in (client, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


@pytest.fixture
def tail_proxy(agents):
    proxy = TailCutProxy((agents[0].host, agents[0].port))
    yield proxy
    proxy.close()


@pytest.fixture
def remote_config(agents, tail_proxy, tmp_path):
    """Two nodes; the first is reached through the tail-cutting proxy."""
    nodes = node_config(agents[:2])
    nodes[0]["url"] = tail_proxy.url
    return {"nodes": nodes, "db_path": str(tmp_path / "remote.sqlite"), **FAST}


async def usable(jp_fetch, count: int = 2) -> None:
    """Wait until `count` nodes take work (a loaded test machine makes them busy: usable)."""

    async def check():
        nodes = (await api(jp_fetch, "nodes"))["nodes"]
        return sum(n["state"] in ("healthy", "busy") for n in nodes) >= count

    await until(check)


async def _post(jp_fetch, body: dict):
    """('ran', events) or (status code, error body)."""
    try:
        return "ran", await execute(jp_fetch, **body)
    except HTTPClientError as exc:
        return exc.code, json.loads(exc.response.body)


async def test_concurrent_duplicates_run_once_over_two_nodes(jp_fetch, agents):
    await usable(jp_fetch)
    pairs = 40
    ids = [f"dup-{uuid.uuid4().hex[:8]}-{i}" for i in range(pairs)]
    body = {"image": BUSYBOX, "command": "echo once"}
    answers = await asyncio.gather(
        *(_post(jp_fetch, {**body, "execution_id": eid}) for eid in ids for _ in range(2))
    )
    for i, eid in enumerate(ids):
        pair = answers[2 * i : 2 * i + 2]
        ran = [events for kind, events in pair if kind == "ran"]
        refused = [err for kind, err in pair if kind == 409]
        assert len(ran) == 1 and len(refused) == 1, pair
        assert refused[0]["reason"] == "duplicate_execution"
        assert refused[0]["execution"]["execution_id"] == eid and refused[0]["execution"]["status"]
        assert [e for e in ran[0] if e["event"] == "exit"][0]["status"] == "completed"
    runs: dict[str, int] = {}
    for agent in agents[:2]:
        for record in await asyncio.to_thread(agent.client.executions, 1000):
            runs[record["execution_id"]] = runs.get(record["execution_id"], 0) + 1
    assert [runs.get(eid, 0) for eid in ids] == [1] * pairs


async def test_a_duplicate_job_id_is_one_job(jp_fetch, agents):
    await usable(jp_fetch)
    body = {"job_id": f"j{uuid.uuid4().hex[:8]}", "image": BUSYBOX, "command": "true"}

    async def submit():
        try:
            return 201, await api(jp_fetch, "jobs", method="POST", body=body)
        except HTTPClientError as exc:
            return exc.code, json.loads(exc.response.body)

    answers = sorted(await asyncio.gather(*(submit() for _ in range(4))), key=lambda a: a[0])
    assert [code for code, _ in answers] == [201, 409, 409, 409]
    assert all(a[1]["reason"] == "duplicate_job" for a in answers[1:])
    assert all(a[1]["job"]["job_id"] == body["job_id"] for a in answers[1:])
    jobs = (await api(jp_fetch, "jobs"))["jobs"]
    assert sum(j["job_id"] == body["job_id"] for j in jobs) == 1


@pytest.mark.parametrize("cut", range(1, 9))
async def test_a_stream_cut_in_its_last_bytes_has_one_true_exit_event(
    jp_fetch, agents, tail_proxy, cut
):
    await usable(jp_fetch)
    tail_proxy.cut_at = cut
    eid = f"tail-{cut}-{uuid.uuid4().hex[:6]}"
    events = await execute(
        jp_fetch,
        execution_id=eid,
        node=agents[0].node_id,
        image=BUSYBOX,
        command="echo out; exit 3",
    )
    assert tail_proxy.cuts >= 1  # the cut really happened
    exits = [e for e in events if e["event"] == "exit"]
    assert len(exits) == 1 and events[-1] is exits[0], events
    assert exits[0]["status"] == "failed" and exits[0]["returncode"] == 3, exits
    assert any(e.get("data") == "out\n" for e in events)
    record = await api(jp_fetch, "executions", eid)
    assert record["status"] == "failed" and record["returncode"] == 3
