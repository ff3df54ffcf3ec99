"""Stopping a job's running tasks: one stopper per job, at most one stop call per task.

A stop on the agent may take as long as its kill grace (a task that ignores SIGTERM). While a
task's stop call is in flight it is never asked again; only once a call has ended without
the node confirming (an error, a cut link, an answer that still says running) is it asked
again, and not before a backoff (STOP_BACKOFF s, doubling up to STOP_BACKOFF_MAX). Every
call runs as a task of its own on the loop, never one after another; the job's one stopper
starts them and waits for them (or for a backoff to pass) until no task of the job runs.
A stop call holds one of the node's work connections for as long as the stop takes, so the
stop calls on one node take at most half of them (STOP_SHARE): cells sent meanwhile get the
rest at once; the other stops wait their turn here, as calls not made yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from jupyter_remote.protocol.errors import RemoteError
from jupyter_remote_server.nodes.reconcile import LinkWatch
from jupyter_remote_server.nodes.registry import Node, NodeRegistry

log = logging.getLogger("jupyter_remote_server")

STOP_BACKOFF = 2.0  # seconds after an unconfirmed stop call before the task is asked again
STOP_BACKOFF_MAX = 30.0
IDLE_LOOK = 1.0  # most seconds a stopper sleeps with no call in flight (a node comes back)
STOP_SHARE = 0.5  # most of a node's work connections its stop calls hold at once


class TaskStops:
    """The stop calls of every job in flight, and each job's one stopper.

    `apply(node, agent_job)` takes the node's answer (the job's service updates its task).
    """

    def __init__(
        self,
        *,
        registry: NodeRegistry,
        links: LinkWatch,
        apply: Callable[[Node, dict], None],
    ) -> None:
        self.registry = registry
        self.links = links
        self.apply = apply
        self.calls: dict[str, asyncio.Task] = {}  # agent job id -> its stop call in flight
        self.sent: Counter = Counter()  # agent job id -> stop calls made for it
        self._on_node: Counter = Counter()  # node id -> its stop calls in flight
        self._next: dict[str, float] = {}  # agent job id -> no call before (monotonic)
        self._stoppers: dict[str, asyncio.Task] = {}  # job id -> its stopper

    def stop(self, job: dict) -> list[asyncio.Task]:
        """Stop the job's running tasks: its stopper runs (one), and the calls in flight now.

        Idempotent: asked again, it starts no call for a task that has one in flight.
        """
        self._launch(job)
        stopper = self._stoppers.get(job["job_id"])
        if stopper is None or stopper.done():
            stopper = asyncio.get_running_loop().create_task(self._stopper(job))
            self._stoppers[job["job_id"]] = stopper
        return self._in_flight(job)

    async def settle(self, job: dict) -> None:
        """Stop the job's running tasks and wait for the calls in flight to end (together)."""
        calls = self.stop(job)
        if calls:
            await asyncio.wait(calls)  # a cancelled wait leaves the calls running

    def forget(self, job: dict) -> None:
        """Drop what is kept for a job (it has ended or is deleted)."""
        stopper = self._stoppers.pop(job["job_id"], None)
        if stopper is not None and not stopper.done() and stopper is not _current():
            stopper.cancel()
        for task in job["tasks"]:
            key = task["agent_job_id"]
            if key and key not in self.calls:
                self.sent.pop(key, None)
                self._next.pop(key, None)

    def cancel_all(self) -> None:
        """The server stops: no stopper or call outlives it."""
        for pending in [*self._stoppers.values(), *self.calls.values()]:
            pending.cancel()
        self._stoppers.clear()

    # -- inside ------------------------------------------------------------------------
    def _in_flight(self, job: dict) -> list[asyncio.Task]:
        keys = (t["agent_job_id"] for t in job["tasks"])
        return [self.calls[k] for k in keys if k in self.calls]

    def _launch(self, job: dict) -> None:
        """A call for each running task that has none in flight and no backoff to wait."""
        now = time.monotonic()
        for task in job["tasks"]:
            key = task["agent_job_id"]
            if task["status"] != "running" or key in self.calls or self._next.get(key, 0) > now:
                continue
            node = self.registry.nodes.get(task["node_id"])
            if node is None or node.state == "lost":
                continue  # a lost node's tasks are marked lost and reconciled when it answers
            if self._on_node[node.node_id] >= max(1, int(node.client.limits[False] * STOP_SHARE)):
                continue  # its turn comes when one of that node's calls ends
            self._on_node[node.node_id] += 1
            self.sent[key] += 1
            self.calls[key] = asyncio.get_running_loop().create_task(self._call(node, task))

    async def _stopper(self, job: dict) -> None:
        while any(t["status"] == "running" for t in job["tasks"]):
            self._launch(job)
            calls = self._in_flight(job)
            now = time.monotonic()
            waits = [  # backoffs still to pass, of tasks with no call in flight
                self._next[key] - now
                for key in (t["agent_job_id"] for t in job["tasks"] if t["status"] == "running")
                if key not in self.calls and self._next.get(key, 0) > now
            ]
            wake = max(0.05, min([IDLE_LOOK, *waits]))
            if calls:
                await asyncio.wait(calls, timeout=wake, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(wake)
        if self._stoppers.get(job["job_id"]) is _current():
            del self._stoppers[job["job_id"]]

    async def _call(self, node: Node, task: dict) -> None:
        key = task["agent_job_id"]
        try:
            # a cut link answers nothing for the read timeout: the call ends when it is lost
            theirs = await self.links.call(node, node.client.stop_job(key))
        except RemoteError as exc:
            log.warning("could not stop %s on %s: %s", key, node.node_id, exc.message)
        else:
            self.apply(node, theirs)
        finally:
            del self.calls[key]
            self._on_node[node.node_id] -= 1
            if task["status"] == "running":  # not confirmed: asked again after a backoff
                wait = min(STOP_BACKOFF_MAX, STOP_BACKOFF * 2 ** (self.sent[key] - 1))
                self._next[key] = time.monotonic() + wait


def _current() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
