"""Pure logic of reconciliation after a partition (tests/test_partition.py runs it for real)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from jupyter_remote.errors import ConnectionFailed
from jupyter_remote.protocol.common import TASK_FINAL, reconciled_as
from jupyter_remote_server.reconcile import LinkWatch


async def stalled(first: bytes):
    """A stream over a cut link: one chunk, then nothing, ever."""
    yield first
    await asyncio.Event().wait()


def setup() -> tuple[SimpleNamespace, LinkWatch]:
    registry = SimpleNamespace(listeners=[])
    return registry, LinkWatch(registry)


def turn(registry, node, new: str) -> None:
    node.reason = f"silent for 5 s ({new})"
    for listener in registry.listeners:
        listener(node, "suspect", new)


def test_a_node_turning_lost_ends_its_waiting_stream_with_an_unknown_outcome():
    async def main():
        registry, watch = setup()
        node, other = SimpleNamespace(node_id="a"), SimpleNamespace(node_id="b")
        stream = watch.guard(node, stalled(b"x"))
        assert await anext(stream) == b"x"
        reader = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        turn(registry, other, "lost")  # another node: nothing happens here
        turn(registry, node, "suspect")  # suspect is not lost: still waiting
        await asyncio.sleep(0.01)
        assert not reader.done()
        turn(registry, node, "lost")
        with pytest.raises(ConnectionFailed) as err:
            await reader
        assert err.value.details == {"sent": True, "node_lost": True}
        assert "turned lost" in err.value.message and "'a'" in err.value.message
        with pytest.raises(ConnectionFailed):  # and stays ended
            await anext(stream)

    asyncio.run(main())


def test_a_cancel_that_is_not_a_cut_still_cancels():
    async def main():
        _, watch = setup()
        stream = watch.guard(SimpleNamespace(node_id="a"), stalled(b"x"))
        await anext(stream)
        reader = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.01)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader

    asyncio.run(main())


def test_the_cut_is_not_left_as_a_pending_cancel_on_the_reading_task():
    async def main():
        registry, watch = setup()
        node = SimpleNamespace(node_id="a")

        async def read() -> str:
            stream = watch.guard(node, stalled(b"x"))
            await anext(stream)
            try:
                await anext(stream)
            except ConnectionFailed:
                task = asyncio.current_task()  # 3.11+ counts cancels; ours is taken back
                assert getattr(task, "cancelling", lambda: 0)() == 0
                await asyncio.sleep(0.01)  # and a later await is not cancelled
                return "ended"

        reader = asyncio.ensure_future(read())
        await asyncio.sleep(0.01)
        turn(registry, node, "lost")
        assert await reader == "ended"

    asyncio.run(main())


@pytest.mark.parametrize(
    ("node_status", "outcome"),
    [(None, "not_received"), ("pending", "stopped"), ("running", "stopped")]
    + [(s, "ended") for s in TASK_FINAL],
)
def test_a_lost_task_is_reconciled_from_its_node_status(node_status, outcome):
    assert reconciled_as(node_status) == outcome


def test_a_call_to_a_node_that_turns_lost_stops_waiting_for_its_answer():
    async def main():
        registry, watch = setup()
        node = SimpleNamespace(node_id="a")
        answer = asyncio.get_running_loop().create_future()  # a request on a cut link
        call = asyncio.ensure_future(watch.call(node, answer))
        await asyncio.sleep(0.01)
        turn(registry, node, "lost")
        with pytest.raises(ConnectionFailed) as err:
            await call
        assert err.value.details["sent"] is True and "before it answered" in err.value.message
        assert await watch.call(node, asyncio.sleep(0, "ok")) == "ok"  # a new call waits again

    asyncio.run(main())
