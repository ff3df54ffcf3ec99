"""Reconciliation after a partition: its pure logic, and the partition test's own rules
(tests/test_partition.py runs it for real)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from jupyter_remote.protocol.common import TASK_FINAL, reconciled_as
from jupyter_remote.protocol.errors import ConnectionFailed, NotFound
from jupyter_remote_server.nodes.reconcile import LinkWatch, LostTasks


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


class FakeAgent:
    """An agent's job calls as the reconciler makes them (pure logic here; no HTTP)."""

    def __init__(self, jobs: dict[str, dict]) -> None:
        self.jobs = jobs
        self.stopped: list[str] = []

    async def job(self, job_id: str) -> dict:
        if job_id not in self.jobs:
            raise NotFound(f"no job {job_id!r}", reason="job_not_found")
        return {"tasks": [self.jobs[job_id]]}

    async def stop_job(self, job_id: str) -> dict:
        self.stopped.append(job_id)
        self.jobs[job_id].update(status="stopped", returncode=137, finished_at=2.0)
        return await self.job(job_id)


def running() -> dict:
    return {"status": "running", "returncode": None, "finished_at": None}


def test_lost_tasks_are_stopped_or_told_once_when_their_node_answers_never_re_run():
    async def main():
        ended = {"status": "completed", "returncode": 0, "finished_at": 1.0}
        agent = FakeAgent({"j.0": running(), "j.1": ended})  # j.2 never arrived
        node = SimpleNamespace(
            node_id="a", answering=False, client=agent, last_seen_at=1e9, reason="silent"
        )
        changed: list[dict] = []
        lost = LostTasks(registry=SimpleNamespace(nodes={"a": node}), changed=changed.append)
        job = {
            "job_id": "j",
            "tasks": [
                {"index": i, "status": "running", "node_id": "a", "agent_job_id": f"j.{i}"}
                for i in range(3)
            ],
        }
        for task in job["tasks"]:
            lost.lost(job, task, node)
        jobs, spawned = {"j": job}, []

        async def steps():
            lost.step(jobs, spawned.append)
            await asyncio.gather(*spawned)
            spawned.clear()

        await steps()  # the node is still silent: nothing asked
        assert agent.stopped == [] and changed == []
        node.answering = True
        await steps()
        tasks = job["tasks"]
        assert [t["reconciled"]["outcome"] for t in tasks] == ["stopped", "ended", "not_received"]
        assert [t["status"] for t in tasks] == ["lost"] * 3  # final statuses stay
        assert agent.stopped == ["j.0"] and len(changed) == 3
        assert "still running there and was stopped" in tasks[0]["reconciled"]["message"]
        await steps()  # once: nothing more to do
        assert not lost.seen(job, tasks[1], ended) and len(changed) == 3
        agent.jobs["j.2"] = running()  # its send arrived late after all: stopped, not run
        assert not lost.seen(job, tasks[2], agent.jobs["j.2"])
        await steps()
        assert tasks[2]["reconciled"]["outcome"] == "stopped" and agent.stopped[-1] == "j.2"

    asyncio.run(main())


def test_lost_tasks_not_reconciled_before_a_restart_are_due_after_it():
    lost = LostTasks(registry=SimpleNamespace(nodes={}), changed=None)
    task = {"status": "lost", "agent_job_id": "j.0", "index": 0}
    done = {**task, "index": 1, "reconciled": {"outcome": "stopped"}}
    never_sent = {**task, "index": 2, "agent_job_id": None}
    lost.load({"j": {"job_id": "j", "tasks": [task, done, never_sent]}})
    assert lost.due == {("j", 0)}


@pytest.mark.parametrize("ci", [True, False])
def test_the_partition_test_fails_under_ci_without_iproute2_and_skips_elsewhere(monkeypatch, ci):
    import netns

    monkeypatch.setattr(netns.shutil, "which", lambda name: None)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="iproute2"):
        netns.need_netns()
