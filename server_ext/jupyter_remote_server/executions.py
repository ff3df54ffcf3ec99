"""Proxying executions to agents: streamed through once, never re-sent, always accounted for."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from jupyter_remote.agent.specs import check_id
from jupyter_remote.errors import BadRequest, Conflict, ConnectionFailed, NotFound, RemoteError
from jupyter_remote_server.kernels import KernelSessions
from jupyter_remote_server.nodes import NodeRegistry
from jupyter_remote_server.pool import ExecutorPool
from jupyter_remote_server.pump import ThreadPump
from jupyter_remote_server.store import JobStore

log = logging.getLogger("jupyter_remote_server")

FINAL = ("completed", "failed", "timed_out", "cancelled", "lost", "not_started")
TAIL = 16384
SERVER_FIELDS = ("execution_id", "kernel_id", "node", "fresh", "session_id")


def exit_event(status: str, message: str, **extra) -> bytes:
    event = {"event": "exit", "returncode": -1, "status": status, "message": message, **extra}
    return json.dumps(event).encode() + b"\n"


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
        self.records: dict[str, dict] = {r["execution_id"]: r for r in store.load("execution")}

    def _save(self, record: dict) -> None:
        self.records[record["execution_id"]] = record
        self.store.save("execution", record["execution_id"], record)

    def get(self, execution_id: str) -> dict:
        try:
            return self.records[execution_id]
        except KeyError:
            raise NotFound(f"no execution {execution_id!r}", reason="execution_not_found") from None

    def list(self, kernel_id: str | None = None, limit: int = 100) -> list[dict]:
        records = [r for r in self.records.values() if not kernel_id or r["kernel_id"] == kernel_id]
        return sorted(records, key=lambda r: r["created_at"], reverse=True)[:limit]

    # -- placing -----------------------------------------------------------------------
    def parse(self, body: dict) -> dict:
        """Server-side fields checked here; the agent checks the rest before running."""
        eid = body.get("execution_id") or f"x-{uuid.uuid4().hex}"
        check_id(eid, "execution_id")
        if eid in self.records:
            first = self.records[eid]
            raise Conflict(
                f"execution {eid!r} was already received (status {first['status']}); it is "
                "never run twice",
                reason="duplicate_execution",
                execution=first,
            )
        kernel_id = body.get("kernel_id")
        if kernel_id is not None and not self.known_kernel(kernel_id):
            raise BadRequest(
                f"kernel {kernel_id!r} is not running in this Jupyter server",
                reason="unknown_kernel",
            )
        node = body.get("node")
        if node is not None:
            self.registry.get(node)
        if body.get("session_id") and not node:
            raise BadRequest(
                "session_id needs node: a session lives on one node", reason="bad_session"
            )
        if not isinstance(body.get("fresh", False), bool):
            raise BadRequest("fresh must be true or false", reason="bad_fresh")
        return {"execution_id": eid, "kernel_id": kernel_id, "node": node, "body": body}

    def place(self, req: dict) -> tuple:
        """Choose the node and the container (blocking: may create the kernel's session)."""
        body = req["body"]
        image = body.get("image") or self.default_image
        agent_body = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
        if body.get("session_id"):
            node = self.pool.pick(req["node"])
            agent_body["session_id"] = body["session_id"]
        elif req["kernel_id"] and not body.get("fresh"):
            session = self.kernels.ensure(req["kernel_id"], image, req["node"], body)
            node = self.registry.get(session["node_id"])
            agent_body["session_id"] = session["session_id"]
        else:
            node = self.pool.pick(req["node"], image)
            agent_body["image"] = image
        return node, agent_body

    # -- running -----------------------------------------------------------------------
    async def run(self, body: dict) -> AsyncIterator[bytes]:
        """The execution's NDJSON events as the agent sends them, then an exit event always."""
        req = self.parse(body)
        node, agent_body = await self.blocking(self.place, req)
        eid = req["execution_id"]
        record = {
            "execution_id": eid,
            "node_id": node.node_id,
            "kernel_id": req["kernel_id"],
            "session_id": agent_body.get("session_id"),
            "status": "running",
            "returncode": None,
            "message": None,
            "created_at": time.time(),
            "finished_at": None,
        }
        pump = ThreadPump(
            lambda: node.client.open_execution(eid, **agent_body),
            f"node {node.node_id!r}",
            self.stream_executor,
        )
        node.inflight += 1
        self._save(record)
        sent_any = False
        tail = b""
        try:
            async for chunk in pump.start():
                sent_any = True
                tail = tail[-TAIL:] + chunk[-TAIL:]  # enough to hold the exit event
                yield chunk
            yield self._finish(record, tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
        except RemoteError as exc:
            if not sent_any and exc.status < 500:
                record["status"] = "refused"  # the agent refused it: nothing ran, keep nothing
                del self.records[eid]
                self.store.delete("execution", eid)
                raise
            yield self._broken(record, node.node_id, exc, sent_any)
        finally:
            node.inflight -= 1
            pump.close()
            if record["status"] == "running":  # the caller left before the end
                record.update(status="unknown", message="the caller went away; cancelled")
                self._save(record)
                asyncio.get_running_loop().create_task(self._cancel_quietly(node, eid))

    def _finish(self, record: dict, last: bytes) -> bytes:
        try:
            event = json.loads(last)
        except ValueError:
            event = {}
        if event.get("event") == "exit":
            record.update(
                status=event["status"],
                returncode=event["returncode"],
                message=event.get("message"),
                finished_at=time.time(),
            )
            self._save(record)
            return b""
        return self._broken(
            record, record["node_id"], ConnectionFailed("the stream ended early", sent=True), True
        )

    def _broken(self, record: dict, node_id: str, exc: RemoteError, sent_any: bool) -> bytes:
        """Turn a failure between server and agent into the final event; never re-send."""
        sent = sent_any or exc.details.get("sent", True)
        if sent:
            status = "unknown"
            message = (
                f"node {node_id!r}: {exc.message}; the command had been sent, so its outcome "
                "is unknown. It was not re-sent; its record will be settled from the node."
            )
        else:
            status = "not_started"
            message = f"node {node_id!r}: {exc.message}; the command was not run"
        record.update(status=status, returncode=-1, message=message, finished_at=time.time())
        self._save(record)
        return exit_event(status, message, node_id=node_id, execution_id=record["execution_id"])

    async def _cancel_quietly(self, node, execution_id: str) -> None:
        try:
            await self.blocking(node.client.cancel, execution_id)
        except RemoteError:
            pass
        await self.settle_one(self.records[execution_id])

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
            async for chunk in pump.start():
                yield chunk
        finally:
            pump.close()

    # -- settling ----------------------------------------------------------------------
    async def settle_one(self, record: dict) -> None:
        """Replace an unknown outcome with the node's own record of it."""
        node = self.registry.nodes.get(record["node_id"])
        if node is None or not node.usable:
            return
        try:
            theirs = await self.blocking(node.client.execution, record["execution_id"])
        except NotFound:
            record.update(status="not_started", message=f"node {node.node_id!r} never received it")
            self._save(record)
            return
        except RemoteError:
            return
        if theirs["status"] in FINAL:
            record.update(
                status=theirs["status"],
                returncode=theirs["returncode"],
                finished_at=theirs["finished_at"],
                message=(theirs.get("message") or "") + " (settled from the node's record)",
                settled=True,
            )
            self._save(record)

    async def settle_unknown(self) -> None:
        for record in [r for r in self.records.values() if r["status"] in ("unknown", "running")]:
            await self.settle_one(record)
