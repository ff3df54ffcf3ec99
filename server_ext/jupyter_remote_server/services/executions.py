"""Proxying executions to agents: streamed through once, never re-sent, always accounted for."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from jupyter_remote.protocol.errors import BadRequest, Conflict, ConnectionFailed, NotFound, RemoteError
from jupyter_remote.protocol.common import EXECUTION_FINAL, EXECUTION_UNSETTLED
from jupyter_remote.protocol.queries import ExecutionPageQuery, finish_page
from jupyter_remote.protocol.records import Splitter
from jupyter_remote_server.agents.stream import AgentStreams
from jupyter_remote_server.services.kernels import KernelSessions
from jupyter_remote_server.nodes.registry import Node, NodeRegistry
from jupyter_remote_server.nodes.pool import ExecutorPool
from jupyter_remote_server.agents.pump import ThreadPump
from jupyter_remote_server.nodes.reconcile import LinkWatch
from jupyter_remote_server.store.retention import is_live, refuse_expired
from jupyter_remote_server.store.jobstore import JobStore

log = logging.getLogger("jupyter_remote_server")

TAIL = 16384
SERVER_FIELDS = ("execution_id", "kernel_id", "owner", "node", "fresh", "session_id")
SETTLE_WAIT = 5.0  # seconds to ask a node for an outcome after its stream broke
SESSION_GONE = ("session_not_found", "session_expired")


def exit_event(status: str, message: str, **extra) -> bytes:
    event = {"event": "exit", "returncode": -1, "status": status, "message": message, **extra}
    return json.dumps(event).encode() + b"\n"


def notice_event(message: str) -> bytes:
    """A line for the user about how the cell was placed (shown once, not an error)."""
    return json.dumps({"event": "notice", "message": message}).encode() + b"\n"


class ExecutionService:
    """Places, proxies, cancels and settles executions; keeps a record of each."""

    def __init__(
        self,
        *,
        registry: NodeRegistry,
        pool: ExecutorPool,
        kernels: KernelSessions,
        store: JobStore,
        blocking: Callable,
        stream_executor: Executor,
        default_image: str,
        known_kernel: Callable[[str], bool],
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.kernels = kernels
        self.store = store
        self.blocking = blocking
        self.stream_executor = stream_executor
        self.default_image = default_image
        self.known_kernel = known_kernel
        self.links = LinkWatch(registry)  # ends streams from a node that turns lost
        self.streams = AgentStreams()  # execution streams on the event loop
        self._settling: set[asyncio.Task] = set()
        registry.listeners.append(self._on_node_state)
        # only live ones (not settled yet) in memory; the rest are read from the store
        self.records: dict[str, dict] = {r["execution_id"]: r for r in store.load_live("execution")}
        for record in list(self.records.values()):
            if record["status"] == "placing":  # the server stopped before sending it
                record.update(status="not_started", returncode=-1, message="never sent")
                self._save(record)

    def _save(self, record: dict) -> None:
        eid = record["execution_id"]
        self.store.save("execution", eid, record)
        if is_live("execution", record):
            self.records[eid] = record
        else:  # settled: read from the store from now on
            self.records.pop(eid, None)

    def get(self, execution_id: str) -> dict:
        record = self.records.get(execution_id) or self.store.get("execution", execution_id)
        if record is None:
            refuse_expired(self.store, "execution", execution_id)
            raise NotFound(f"no execution {execution_id!r}", reason="execution_not_found")
        return record

    def forget(self, execution_id: str) -> None:
        """Retention removed it from the store."""
        self.records.pop(execution_id, None)

    def list(self, query: ExecutionPageQuery) -> dict:
        """One page, newest first by (created_at, id): from the store, live ones as in memory."""
        rows = self.store.page("execution", query.limit + 1, query.after(), query.kernel_id)
        rows = [self.records.get(r["execution_id"], r) for r in rows]
        return finish_page(rows, query.limit, "created_at", "execution_id")

    # -- placing -----------------------------------------------------------------------
    def reserve(self, body: dict) -> dict:
        """Check the server-side fields, then claim the id before anything else happens.

        `body` passed ServerExecutionBody already (types, ranges, ids). Runs on the event
        loop with no await inside, and the store's insert is atomic: of two requests with one
        id, exactly one gets past here; the other is a 409.
        """
        eid = body.get("execution_id") or f"x-{uuid.uuid4().hex}"
        self._refuse_duplicate(eid)
        kernel_id = body.get("kernel_id")
        if kernel_id is not None and not self.known_kernel(kernel_id):
            raise BadRequest(
                f"kernel {kernel_id!r} is not running in this Jupyter server",
                reason="unknown_kernel",
            )
        owner = body.get("owner")
        if owner is not None and kernel_id is not None:
            raise BadRequest("give kernel_id or owner, not both", reason="bad_owner")
        node = body.get("node")
        if node is not None:
            self.registry.get(node)
        if body.get("session_id") and not node:
            raise BadRequest(
                "session_id needs node: a session lives on one node", reason="bad_session"
            )
        if not body.get("session_id"):
            self.pool.refuse_missing_image(
                body.get("image") or self.default_image, [node] if node else None
            )
        record = {
            "execution_id": eid,
            "node_id": node,
            "kernel_id": kernel_id,
            "session_id": body.get("session_id"),
            "status": "placing",
            "returncode": None,
            "message": None,
            "created_at": time.time(),
            "finished_at": None,
        }
        if not self.store.reserve("execution", eid, record):
            self._refuse_duplicate(eid, self.store.get("execution", eid) or record)
        self.records[eid] = record
        # whose session the cell runs in: a kernel this server started, or an API client's
        # owner id (kernels it did not start: nbval, VS Code, a terminal IPython)
        session_owner = kernel_id or owner
        return {
            "execution_id": eid,
            "kernel_id": kernel_id,
            "owner": session_owner,
            "node": node,
            "body": body,
        }

    def _refuse_duplicate(self, eid: str, first: dict | None = None) -> None:
        first = first or self.records.get(eid)
        if first is None and (stone := self.store.expired("execution", eid)) is not None:
            first = {"execution_id": eid, "expired": True, **stone}
        if first is not None:
            raise Conflict(
                f"execution {eid!r} was already received (status {first['status']}); it is "
                "never run twice",
                reason="duplicate_execution",
                execution=first,
            )

    def _release(self, execution_id: str) -> None:
        """Forget a reservation whose request was refused before anything ran."""
        self.records.pop(execution_id, None)
        self.store.delete("execution", execution_id)

    def place(self, req: dict, known_only: bool = False) -> tuple[Node, dict, list[str]] | None:
        """Choose the node and the container (blocking: may create the kernel's session).

        `known_only`: no I/O and no lock, so the event loop may call it (a thread hop is
        ~0.2 ms of a cell): the owner's session when it is known and its node answers, else
        None, and then it is called again on a thread, where every refusal is made.
        """
        body = req["body"]
        image = body.get("image") or self.default_image
        agent_body = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
        notices: list[str] = []
        if body.get("session_id") and not known_only:
            node = self.pool.pick(req["node"])
            agent_body["session_id"] = body["session_id"]
        elif req["owner"] and not body.get("fresh"):
            if known_only:
                session = self.kernels.sessions.get(self.kernels.key(req["owner"], image))
                node = session and self.registry.nodes.get(session["node_id"])
                if not node or not node.answering or req["node"] not in (None, node.node_id):
                    return None
            else:
                kind = "kernel" if req["kernel_id"] else "client"
                session = self.kernels.ensure(req["owner"], image, req["node"], body, kind=kind)
                node = self.registry.get(session["node_id"])
            notices += self.kernels.unmet_limits(session, body)
            agent_body["session_id"] = session["session_id"]
        elif known_only:
            return None
        else:
            node = self.pool.pick(req["node"], image)
            agent_body["image"] = image
        return node, agent_body, notices

    @staticmethod
    def _session_gone(req: dict, exc: RemoteError) -> bool:
        """The node no longer has the kernel's session (its idle timeout removed it)."""
        body = req["body"]
        return (
            exc.status == 404
            and exc.reason in SESSION_GONE
            and bool(req["owner"])
            and not body.get("session_id")
            and not body.get("fresh")
        )

    def replace_session(self, req: dict, gone: RemoteError) -> tuple[Node, dict, list[str]]:
        """The kernel's session was removed on its node (idle): make a new one (blocking).

        Nothing ran (the node refused the request), so this is not a re-send.
        """
        body = req["body"]
        image = body.get("image") or self.default_image
        old = self.kernels.forget(req["owner"], image)
        node, agent_body, notices = self.place(req)
        where = f" on node {old['node_id']!r}" if old else ""
        notices.insert(
            0,
            f"this {_whose(req)} {image} session{where} is gone ({gone.message}); a new one was "
            f"made on node {node.node_id!r}: the old one's files and state are not in it.",
        )
        return node, agent_body, notices

    # -- running -----------------------------------------------------------------------
    async def run(self, body: dict) -> AsyncIterator[bytes]:
        """Whole NDJSON event lines as the agent sends them, ending in one exit event."""
        req = self.reserve(body)
        eid = req["execution_id"]
        try:
            placed = self.place(req, known_only=True)
            node, agent_body, notices = placed or await self.blocking(self.place, req)
        except BaseException:
            self._release(eid)
            raise
        record = self.records[eid]

        def sent() -> None:
            # saved while the agent works on it, not after its first byte: off the cell's
            # path, and a server that stops now settles it from the node on restart
            record["status"] = "running"
            self._save(record)

        for attempt in (1, 2):
            record.update(node_id=node.node_id, session_id=agent_body.get("session_id"))
            try:
                pump, events, first = await self._open(node, eid, agent_body, sent)
                break
            except RemoteError as exc:
                if attempt == 1 and self._session_gone(req, exc):
                    try:
                        node, agent_body, notices = await self.blocking(
                            self.replace_session, req, exc
                        )
                    except BaseException:
                        self._release(eid)
                        raise
                    continue
                if exc.status < 500:  # the agent refused it: nothing ran, keep nothing
                    self._release(eid)
                    raise
                record["status"] = "running"
                yield self._broken(record, node, exc, sent=exc.details.get("sent", True))
                return
        node.inflight += 1
        lines = Splitter()  # whole records only, up to the exit event
        try:
            head = b"".join(notice_event(n) for n in notices)
            yield head + lines.feed(first)
            async for chunk in events:
                out = lines.feed(chunk)
                if out:
                    yield out
                if lines.exit is not None:
                    break
            if lines.exit is None:
                raise ConnectionFailed("the stream ended before the exit event", sent=True)
        except RemoteError as exc:
            if lines.exit is None:
                yield await self._settle_broken(record, node, exc)
        finally:
            node.inflight -= 1
            pump.close(reuse=lines.exit is not None)
            if lines.exit is not None:
                self._finish(record, lines.exit)
            elif record["status"] == "running":  # the caller left before the end
                record.update(status="unknown", message="the caller went away; cancelled")
                self._save(record)
                asyncio.get_running_loop().create_task(self._cancel_quietly(node, eid))

    async def _open(self, node: Node, eid: str, agent_body: dict, sent: Callable[[], None]):
        """Send the execution, call `sent`; its pump, the rest of its chunks and the first.

        A refusal or a failure before the first byte is raised here, while the caller can
        still get a JSON error instead of a stream.
        """
        if AgentStreams.usable(node.client):
            pump = await self.streams.open_execution(node.client, eid, agent_body)
        else:
            pump = ThreadPump(
                lambda: node.client.open_execution(eid, **agent_body),
                f"node {node.node_id!r}",
                self.stream_executor,
            ).start()
        try:
            sent()
        except BaseException:
            pump.close()
            raise
        events = self.links.guard(node, pump)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = b""
        except BaseException:
            pump.close()
            raise
        return pump, events, first

    def _finish(self, record: dict, event: dict) -> None:
        record.update(
            status=event.get("status", "unknown"),
            returncode=event.get("returncode", -1),
            message=event.get("message"),
            finished_at=time.time(),
        )
        self._save(record)

    async def _settle_broken(self, record: dict, node: Node, exc: RemoteError) -> bytes:
        """The one exit event after a break: the node's own outcome if it knows it.

        A node that turned lost is not asked (its link may be cut): the outcome is unknown
        until it answers again. A suspect one is: it may answer in time.
        """
        theirs = None
        if node.state != "lost":
            try:
                theirs = await self.blocking(
                    node.client.execution, record["execution_id"], SETTLE_WAIT
                )
            except RemoteError:
                pass
        if theirs and theirs.get("status") in EXECUTION_FINAL:
            message = (theirs.get("message") or "") + (
                f" (the stream from node {node.node_id!r} broke at its end: {exc.message}; "
                "this outcome is the node's own record)"
            )
            event = {
                "event": "exit",
                "returncode": theirs["returncode"],
                "status": theirs["status"],
                "message": message.strip(),
                "settled": True,
            }
            self._finish(record, event)
            return json.dumps(event).encode() + b"\n"
        return self._broken(record, node, exc, sent=True)

    def _broken(self, record: dict, node: Node, exc: RemoteError, sent: bool) -> bytes:
        """Turn a failure between server and agent into the final event; never re-send."""
        if sent:
            status = "unknown"
            message = (
                f"node {node.node_id!r}: {exc.message}; the command had been sent, so its "
                "outcome is unknown. It was not re-sent; its record will be settled from the "
                "node."
            )
        else:
            status = "not_started"
            message = f"node {node.node_id!r}: {exc.message}; the command was not run"
        record.update(status=status, returncode=-1, message=message, finished_at=time.time())
        self._save(record)
        return exit_event(
            status, message, node_id=node.node_id, execution_id=record["execution_id"]
        )

    async def _cancel_quietly(self, node, execution_id: str) -> None:
        try:
            await self.blocking(node.client.cancel, execution_id)
        except RemoteError:
            pass
        record = self.records.get(execution_id)
        if record is not None:
            await self.settle_one(record)

    async def cancel(self, execution_id: str, signal: str = "SIGTERM") -> dict:
        record = self.get(execution_id)
        node = self.registry.get(record["node_id"])
        return await self.blocking(node.client.cancel, execution_id, signal)

    async def events(self, execution_id: str, offset: int, follow: bool) -> AsyncIterator[bytes]:
        """The execution's events from the node's own log (reattach after a break)."""
        record = self.get(execution_id)
        node = self.registry.get(record["node_id"])
        pump = ThreadPump(
            lambda: node.client.open_execution_events(execution_id, offset, follow),
            f"node {node.node_id!r}",
            self.stream_executor,
        )
        try:
            async for chunk in self.links.guard(node, pump.start()):
                yield chunk
        finally:
            pump.close()

    # -- settling ----------------------------------------------------------------------
    async def settle_one(self, record: dict) -> None:
        """Replace an unknown outcome with the node's own record of it."""
        node = self.registry.nodes.get(record["node_id"])
        if node is None or not node.answering:  # reading a record: any node that answers
            return
        try:
            theirs = await self.blocking(node.client.execution, record["execution_id"])
        except NotFound as exc:
            if exc.reason != "expired":
                record.update(
                    status="not_started", message=f"node {node.node_id!r} never received it"
                )
                self._save(record)
                return
            theirs = {"message": "its record there has expired", **exc.details}
        except RemoteError:
            return
        if theirs["status"] in EXECUTION_FINAL:
            record.update(
                status=theirs["status"],
                returncode=theirs["returncode"],
                finished_at=theirs["finished_at"],
                message=(theirs.get("message") or "") + " (settled from the node's record)",
                settled=True,
            )
            self._save(record)

    async def settle_unknown(self, node_id: str | None = None) -> None:
        """Settle what is unknown (or still running) from each node's record, or one node's."""
        for record in [
            r
            for r in self.records.values()
            if r["status"] in (*EXECUTION_UNSETTLED, "running")
            and (node_id is None or r["node_id"] == node_id)
        ]:
            await self.settle_one(record)

    def _on_node_state(self, node: Node, old: str, new: str) -> None:
        """A lost node answers again: settle its executions now, not at the next round."""
        if old == "lost" and node.answering:
            task = asyncio.get_running_loop().create_task(self.settle_unknown(node.node_id))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)


def _whose(req: dict) -> str:
    return "kernel's" if req["kernel_id"] else f"owner {req['owner']!r}'s"
