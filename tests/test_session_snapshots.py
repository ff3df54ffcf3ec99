"""The per-node session snapshot (pure logic): however many views ask, a node is asked at
most once per poll, and a node that does not answer is never waited on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from jupyter_remote.protocol.errors import Unavailable
from jupyter_remote_server.nodes.session_snapshots import SessionSnapshots


class CountingClient:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def sessions(self, timeout=None, control=False):
        self.calls += 1
        await asyncio.sleep(0.05)
        if self.fail:
            raise Unavailable("connection refused", reason="node_unreachable")
        return [{"session_id": "s-1", "running_executions": 0}]


def node(state="healthy", fail=False):
    return SimpleNamespace(
        node_id="n1",
        state=state,
        reason="silent for 12 s",
        answering=state in ("healthy", "busy", "unhealthy"),
        client=CountingClient(fail),
    )


def test_ten_views_at_once_ask_the_node_once_then_read_the_snapshot():
    async def go():
        snaps, n = SessionSnapshots(poll_interval=5.0), node()
        answers = await asyncio.gather(*(snaps.get(n) for _ in range(10)))
        assert n.client.calls == 1 and all(a == {"s-1": answers[0]["s-1"]} for a in answers)
        for _ in range(10):
            await snaps.get(n)
        assert n.client.calls == 1

    asyncio.run(go())


def test_polls_refresh_only_what_someone_looks_at():
    async def go():
        snaps, n = SessionSnapshots(poll_interval=5.0), node()
        await snaps.after_poll(n)
        assert n.client.calls == 0  # nobody looked
        await snaps.get(n)
        await snaps.after_poll(n)
        assert n.client.calls == 1  # just fetched: the next poll leaves it
        snaps.snapshots["n1"].at -= 10.0  # two polls later
        await snaps.after_poll(n)
        assert n.client.calls == 2
        snaps.forget("n1")
        await snaps.after_poll(n)
        assert n.client.calls == 2

    asyncio.run(go())


def test_a_silent_node_says_why_and_is_not_asked():
    async def go():
        snaps, n = SessionSnapshots(poll_interval=5.0), node(state="suspect")
        why = await snaps.get(n)
        assert why == "node 'n1' is suspect: silent for 12 s" and n.client.calls == 0

    asyncio.run(go())


def test_a_failed_fetch_is_a_reason_and_leaves_no_snapshot():
    async def go():
        snaps, n = SessionSnapshots(poll_interval=5.0), node(fail=True)
        why = await snaps.get(n)
        assert "did not answer" in why and "connection refused" in why
        assert snaps.fresh("n1") is None

    asyncio.run(go())


def test_a_session_made_or_removed_here_shows_before_the_next_poll():
    async def go():
        snaps, n = SessionSnapshots(poll_interval=5.0), node()
        await snaps.get(n)
        snaps.note("n1", {"session_id": "s-2", "running_executions": 0})
        assert set(await snaps.get(n)) == {"s-1", "s-2"}
        snaps.drop("n1", "s-1")
        assert set(await snaps.get(n)) == {"s-2"} and n.client.calls == 1

    asyncio.run(go())


def test_a_shared_answer_is_built_once_for_every_panel_polling_meanwhile():
    """Ten panels at once cost one build; a new key (a session made or forgotten moves the
    version in it) is built at once; after the TTL it is built again."""
    from jupyter_remote_server.services.shared_answers import SharedAnswers

    builds = []

    async def build():
        builds.append(1)
        await asyncio.sleep(0.05)
        return {"sessions": [], "n": len(builds)}

    async def go():
        shared = SharedAnswers(ttl=0.3)
        first = await asyncio.gather(*(shared.encoded(("s", 0), build) for _ in range(10)))
        assert len(builds) == 1 and len(set(first)) == 1 and b'"n": 1' in first[0]
        assert await shared.encoded(("s", 0), build) == first[0]  # within the TTL
        await shared.encoded(("s", 1), build)  # a session made or forgotten
        assert len(builds) == 2
        await asyncio.sleep(0.35)
        assert b'"n": 3' in await shared.encoded(("s", 1), build)

    asyncio.run(go())
