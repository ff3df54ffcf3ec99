"""Each execution's record: claimed once, ended once, settled from its node when unknown."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid

from jupyter_remote.protocol.common import EXECUTION_FINAL, EXECUTION_UNSETTLED
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound, RemoteError
from jupyter_remote.protocol.queries import ExecutionPageQuery, finish_page
from jupyter_remote_server.nodes.registry import Node
from jupyter_remote_server.services.user_quota import ask_of
from jupyter_remote_server.services.users import SERVER, Caller, id_used, not_found
from jupyter_remote_server.store.retention import is_live, refuse_expired

SETTLE_WAIT = 5.0  # seconds to ask a node for an outcome after its stream broke
SETTLE_AT_ONCE = 16  # records asked about at once by one settling round


def source_digest(body: dict) -> str:
    """sha256 of the cell's body, trailing whitespace cut: a page whose cells got new ids
    (a notebook saved without them) finds the cell by its source instead."""
    source = body.get("command") or body.get("python") or ""
    return hashlib.sha256(source.rstrip().encode()).hexdigest()


def exit_event(status: str, message: str, **extra) -> bytes:
    event = {"event": "exit", "returncode": -1, "status": status, "message": message, **extra}
    return json.dumps(event).encode() + b"\n"


class ExecutionRecords:
    """The execution service's records (a part of ExecutionService, which sets `registry`,
    `pool`, `store`, `quota` and `known_kernel`): live ones in memory, the rest in the store."""

    streaming: set[str]  # ids whose stream this server reads now (ExecutionService sets it)

    def _load_records(self) -> None:
        # only live ones (not settled yet) in memory; the rest are read from the store
        self.records: dict[str, dict] = {
            r["execution_id"]: r for r in self.store.load_live("execution")
        }
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
            self.quota.give_back(f"execution:{eid}")

    def get(self, execution_id: str) -> dict:
        record = self.records.get(execution_id) or self.store.get("execution", execution_id)
        if record is None:
            refuse_expired(self.store, "execution", execution_id)
            raise not_found("execution", execution_id)
        return record

    def forget(self, execution_id: str) -> None:
        """Retention removed it from the store."""
        self.records.pop(execution_id, None)

    def list(self, query: ExecutionPageQuery, caller: Caller = SERVER) -> dict:
        """One page, newest first by (created_at, id): from the store, live ones as in memory;
        the caller's own (an operator's: all)."""
        user = None if caller.operator else caller.user
        rows = self.store.page("execution", query.limit + 1, query.after(), query.kernel_id, user)
        rows = [self.records.get(r["execution_id"], r) for r in rows]
        return finish_page(rows, query.limit, "created_at", "execution_id")

    # -- claiming ----------------------------------------------------------------------
    def reserve(self, body: dict, caller: Caller = SERVER) -> dict:
        """Check the server-side fields, then claim the id before anything else happens.

        `body` passed ServerExecutionBody already (types, ranges, ids). Runs on the event
        loop with no await inside, and the store's insert is atomic: of two requests with one
        id, exactly one gets past here; the other is a 409.
        """
        eid = body.get("execution_id") or f"x-{uuid.uuid4().hex}"
        self._refuse_duplicate(eid, caller=caller)
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
        if caller.user is not None:
            record["user"] = caller.user
        if body.get("cell_id"):  # a notebook's cell: run() adds its notebook's path
            record.update(
                cell_id=body["cell_id"],
                source_sha256=source_digest(body),
                image=body.get("image") or self.default_image,
            )
        fresh = not body.get("session_id") and (body.get("fresh") or not (kernel_id or owner))
        if fresh:  # its own container: held against the user's quota until it ends
            record["quota"] = ask_of(body, False)
            self.quota.take(caller.quota_key, f"execution:{eid}", record["quota"], "this cell")
        if not self.store.reserve("execution", eid, record):
            self.quota.give_back(f"execution:{eid}")
            self._refuse_duplicate(eid, self.store.get("execution", eid) or record, caller)
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
            "caller": caller,
        }

    def _refuse_duplicate(
        self, eid: str, first: dict | None = None, caller: Caller = SERVER
    ) -> None:
        first = first or self.records.get(eid)
        if first is None and (stone := self.store.expired("execution", eid)) is not None:
            first = {"execution_id": eid, "expired": True, **stone}
        if first is not None and not caller.sees(first):
            raise id_used("execution", eid)
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
        self.quota.give_back(f"execution:{execution_id}")

    # -- ending ------------------------------------------------------------------------
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
                theirs = await node.client.execution(record["execution_id"], SETTLE_WAIT)
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

    # -- settling ----------------------------------------------------------------------
    async def settle_one(self, record: dict) -> None:
        """Replace an unknown outcome with the node's own record of it."""
        node = self.registry.nodes.get(record["node_id"])
        if node is None or not node.answering:  # reading a record: any node that answers
            return
        try:
            theirs = await node.client.execution(record["execution_id"])
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
        """Settle what is unknown (or still running) from each node's record, or one node's.

        An execution whose stream this server is reading now is skipped: its exit event
        will settle it. The rest are asked concurrently, at most SETTLE_AT_ONCE at a time,
        so a round takes about one answer's time, not one per record.
        """
        todo = [
            r
            for r in self.records.values()
            if r["status"] in (*EXECUTION_UNSETTLED, "running")
            and r["execution_id"] not in self.streaming
            and (node_id is None or r["node_id"] == node_id)
        ]
        gate = asyncio.Semaphore(SETTLE_AT_ONCE)

        async def one(record: dict) -> None:
            async with gate:
                await self.settle_one(record)

        await asyncio.gather(*(one(r) for r in todo))
