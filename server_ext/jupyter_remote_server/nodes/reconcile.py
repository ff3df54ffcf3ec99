"""After a partition: what a node did while the server had it marked lost.

A cut link may never break a TCP stream (nothing arrives, nothing fails), so a stream from
a node that turns lost is ended here, its outcome "unknown" until the node's own record
settles it. A task the server marked lost may still run on the node when the link comes
back: it is stopped there (its output kept), never re-run, and the task says so, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable

from jupyter_remote.protocol.common import TASK_FINAL, reconciled_as
from jupyter_remote.protocol.errors import ConnectionFailed, NotFound, RemoteError
from jupyter_remote_server.nodes.registry import Node, NodeRegistry

log = logging.getLogger("jupyter_remote_server")

RETRY_EVERY = 2.0  # seconds between attempts at a lost task whose node answered, then failed


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "an unknown time"


class LinkWatch:
    """Ends the streams from a node as soon as the registry marks it lost."""

    def __init__(self, registry: NodeRegistry) -> None:
        self._streams: dict[str, weakref.WeakSet[Guarded]] = {}
        registry.listeners.append(self._on_node_state)

    def guard(self, node: Node, chunks=None, what: str = "mid-stream") -> Guarded:
        """`chunks`, until `node` turns lost: then ConnectionFailed (sent: outcome unknown)."""
        stream = Guarded(node, chunks, what)
        self._streams.setdefault(node.node_id, weakref.WeakSet()).add(stream)
        return stream

    async def call(self, node: Node, awaitable):
        """A request's answer, unless `node` turns lost first (the request is cancelled)."""
        return await self.guard(node, what="before it answered").wait(awaitable)

    def _on_node_state(self, node: Node, old: str, new: str) -> None:
        if new == "lost":
            for stream in list(self._streams.get(node.node_id, ())):
                stream.cut(node.reason)


class Guarded:
    """An async iterator of chunks (or one awaited answer) that a lost node ends at once.

    Free on the hot path (no race per chunk): only a cut cancels the reading task, and only
    while it waits inside `wait`; the cancellation becomes a ConnectionFailed.
    """

    def __init__(self, node: Node, chunks=None, what: str = "mid-stream") -> None:
        self._chunks = aiter(chunks) if chunks is not None else None
        self._node_id = node.node_id
        self._what = what
        self._waiting: asyncio.Task | None = None
        self._cut: str | None = None

    def __aiter__(self) -> Guarded:
        return self

    async def __anext__(self) -> bytes:
        return await self.wait(anext(self._chunks))

    async def wait(self, awaitable):
        if self._cut is not None:
            getattr(awaitable, "close", lambda: None)()  # never awaited: say so to nobody
            raise self._error()
        self._waiting = asyncio.current_task()
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._cut is None:
                raise
            if hasattr(self._waiting, "uncancel"):  # 3.11+: this cancel was ours, not theirs
                self._waiting.uncancel()
            raise self._error() from None
        finally:
            self._waiting = None

    def cut(self, why: str) -> None:
        if self._cut is None:
            self._cut = why
            if self._waiting is not None:
                self._waiting.cancel()

    def _error(self) -> ConnectionFailed:
        return ConnectionFailed(
            f"node {self._node_id!r} turned lost {self._what} ({self._cut}): its link may be "
            "cut, so the server stopped waiting for it",
            sent=True,
            node_lost=True,
        )


class LostTasks:
    """Reconciles each task marked lost once its node answers again: stop, record, once.

    `due` holds (job_id, index) of lost tasks not reconciled yet; the job service calls
    `step` every tick, which only looks at those.
    """

    def __init__(self, *, registry: NodeRegistry, changed: Callable[[dict], None]) -> None:
        self.registry = registry
        self.changed = changed
        self.due: set[tuple[str, int]] = set()
        self._busy: set[tuple[str, int]] = set()
        self._tried: dict[tuple[str, int], float] = {}

    def lost(self, job: dict, task: dict, node: Node) -> None:
        """Mark a running task lost with its node; never re-run."""
        task.update(
            status="lost",
            returncode=-1,
            finished_at=time.time(),
            cut_off_at=node.last_seen_at,
            message=f"node {node.node_id!r} was lost ({node.reason}); the task was not re-run",
        )
        self.due.add((job["job_id"], task["index"]))

    def load(self, jobs: dict[str, dict]) -> None:
        """After a restart: lost tasks whose node had not answered since."""
        for job in jobs.values():
            for task in job["tasks"]:
                if task["status"] == "lost" and task["agent_job_id"] and not task.get("reconciled"):
                    self.due.add((job["job_id"], task["index"]))

    def step(self, jobs: dict[str, dict], spawn: Callable) -> None:
        now = time.monotonic()
        for key in list(self.due):
            job = jobs.get(key[0])
            if job is None:  # deleted (force): nothing left to tell
                self.due.discard(key)
                continue
            task = job["tasks"][key[1]]
            node = self.registry.nodes.get(task["node_id"])
            if node is None or not node.answering or key in self._busy:
                continue
            if now - self._tried.get(key, 0.0) < RETRY_EVERY:
                continue
            self._tried[key] = now
            self._busy.add(key)
            spawn(self._reconcile(job, task, node))

    def seen(self, job: dict, task: dict, theirs: dict) -> bool:
        """The node's feed told of a lost task: settle it now if it has ended there.

        A task still running there waits for `step` (which stops it).
        """
        key = (job["job_id"], task["index"])
        late = (task.get("reconciled") or {}).get("outcome") == "not_received"
        if late and theirs["status"] not in TASK_FINAL:
            self.due.add(key)  # its send arrived after all (a late packet): stopped next step
            return False
        if key not in self.due or key in self._busy or theirs["status"] not in TASK_FINAL:
            return False
        self._record(job, task, task["node_id"], theirs["status"], theirs)
        return True

    async def _reconcile(self, job: dict, task: dict, node: Node) -> None:
        key = (job["job_id"], task["index"])
        try:
            try:
                found = (await node.client.job(task["agent_job_id"]))["tasks"][0]
            except NotFound as exc:  # never received, or ended so long ago its record expired
                found = _expired(exc.details) if exc.reason == "expired" else None
            theirs, status = found, found and found["status"]  # as found, before a stop
            if status is not None and status not in TASK_FINAL:
                # an idempotent control call: asked again at the next step if it fails
                stopped = await node.client.stop_job(task["agent_job_id"])
                theirs = stopped["tasks"][0]
                if theirs["status"] not in TASK_FINAL:
                    return
            if key in self.due:
                self._record(job, task, node.node_id, status, theirs)
        except RemoteError as exc:
            log.warning(
                "could not reconcile lost task %s on %s: %s",
                task["agent_job_id"],
                node.node_id,
                exc.message,
            )
        finally:
            self._busy.discard(key)

    def _record(
        self, job: dict, task: dict, node_id: str, found: str | None, theirs: dict | None
    ) -> None:
        """What happened, once, on the task; its output (logs, saved files) is on the node."""
        now = time.time()
        outcome = reconciled_as(found)
        seen = f"on reconnection at {when(now)}"
        if outcome == "not_received":
            what = f"{seen} the node had no record of it: it never ran there"
        else:
            rc = theirs["returncode"]
            end = f"{theirs['status']}, exit code {rc}"
            kept = (
                "its record there had expired" if theirs.get("expired") else "its output was kept"
            )
            what = (
                f"{seen} it was still {found} there and was stopped ({end}); {kept}"
                if outcome == "stopped"
                else f"{seen} it had ended there meanwhile ({end}); {kept}"
            )
        message = (
            f"node {node_id!r} was cut off at {when(task.get('cut_off_at'))}; the task was "
            f"marked lost at {when(task['finished_at'])}; {what}. It was not re-run."
        )
        task["reconciled"] = {
            "outcome": outcome,
            "at": now,
            "node_status": theirs["status"] if theirs else None,
            "returncode": theirs["returncode"] if theirs else None,
            "finished_at": theirs["finished_at"] if theirs else None,
            "message": message,
        }
        if theirs and theirs.get("outputs") is not None:
            task["outputs"] = theirs["outputs"]
        key = (job["job_id"], task["index"])
        self.due.discard(key)
        self._tried.pop(key, None)
        log.warning("job %s task %s: %s", job["job_id"], task["index"], message)
        self.changed(job)


def _expired(details: dict) -> dict:
    """An agent job removed by the node's retention: how it ended, as its 404 tells."""
    return {
        "status": details.get("status") or "completed",
        "returncode": details.get("returncode"),
        "finished_at": details.get("finished_at"),
        "expired": True,
    }
