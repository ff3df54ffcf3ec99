"""Proxying executions to agents: streamed through once, never re-sent, always accounted for."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from jupyter_remote.protocol.errors import ConnectionFailed, RemoteError
from jupyter_remote.protocol.records import Splitter
from jupyter_remote_server.agents.http import Answer
from jupyter_remote_server.nodes.reconcile import Guarded, LinkWatch
from jupyter_remote_server.nodes.registry import Node
from jupyter_remote_server.services.execution_records import ExecutionRecords, exit_event
from jupyter_remote_server.services.placement import ExecutionPlacement
from jupyter_remote_server.services.users import SERVER, Caller

__all__ = ["ExecutionService", "exit_event", "notice_event"]


def notice_event(message: str) -> bytes:
    """A line for the user about how the cell was placed (shown once, not an error)."""
    return json.dumps({"event": "notice", "message": message}).encode() + b"\n"


class ExecutionService(ExecutionRecords, ExecutionPlacement, LoggingConfigurable):
    """Places, proxies, cancels and settles executions; keeps a record of each.

    Made with `parent=` the RemoteManager, whose registry, pool, kernels and store it uses.
    """

    default_image = Unicode(help="Image used when a request names none.")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        manager = self.parent
        self.registry = manager.registry
        self.pool = manager.pool
        self.kernels = manager.kernels
        self.store = manager.store
        self.quota = manager.quota
        self.known_kernel = manager.known_kernel
        self.notebook_of = manager.notebook_of
        self.links = LinkWatch(self.registry)  # ends streams from a node that turns lost
        self._settling: set[asyncio.Task] = set()
        self.streaming: set[str] = set()  # housekeeping leaves these to their exit event
        self.registry.listeners.append(self._on_node_state)
        self._load_records()

    # -- running -----------------------------------------------------------------------
    async def run(self, body: dict, caller: Caller = SERVER) -> AsyncIterator[bytes]:
        """Whole NDJSON event lines as the agent sends them, ending in one exit event."""
        req = self.reserve(body, caller)
        eid = req["execution_id"]
        record = self.records[eid]
        try:
            if record.get("cell_id"):  # a notebook's cell: file it under its path
                record["notebook_path"] = await self.notebook_of(req["kernel_id"])
            node, agent_body, notices = self.place_known(req) or await self.place(req)
        except BaseException:
            self._release(eid)
            raise
        for attempt in (1, 2):
            record.update(node_id=node.node_id, session_id=agent_body.get("session_id"))
            if "image" in record:  # a notebook's cell: what a reloaded page's footer names
                record["image"] = agent_body.get("image") or record["image"]
            picked = node
            picked.placing += 1  # counted from the pick (no await since): bursts spread
            try:
                answer, events, first = await self._open(node, record, agent_body)
                break
            except RemoteError as exc:
                if attempt == 1 and self._session_gone(req, exc):
                    try:
                        node, agent_body, notices = await self.replace_session(req, exc)
                    except BaseException:
                        self._release(eid)
                        raise
                    continue
                if exc.status < 500 or exc.reason == "too_many_open_files":
                    # the agent refused it, or this server had no descriptor to send it
                    # with: nothing ran, keep nothing; the caller gets the error itself
                    self._release(eid)
                    raise
                yield self._broken(record, node, exc, sent=exc.details.get("sent", True))
                return
            finally:
                picked.placing -= 1
        node.inflight += 1
        self.streaming.add(eid)
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
            self.streaming.discard(eid)
            answer.close(reuse=lines.exit is not None)
            if lines.exit is not None:
                self._finish(record, lines.exit)
                if agent_body.get("gpus") is not None and not agent_body.get("session_id"):
                    node.gpus_freed = True  # its GPUs are back before the next poll says so
            elif record["status"] == "running":  # the caller left before the end
                record.update(status="unknown", message="the caller went away; cancelled")
                self._save(record)
                asyncio.get_running_loop().create_task(self._cancel_quietly(node, eid))

    async def _open(self, node: Node, record: dict, agent_body: dict):
        """Send the execution; its answer, the rest of its chunks and the first chunk.

        Saved as running before it is sent (a server that stops now settles it from the
        node on restart). A refusal or a failure before the first byte is raised here,
        while the caller can still get a JSON error instead of a stream.
        """
        eid = record["execution_id"]
        record["status"] = "running"
        self._save(record)
        opening = node.client.open_execution(eid, agent_body, f"node {node.node_id!r}")
        answer: Answer = await self.links.call(node, opening)
        events = self.links.guard(node, answer)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            first = b""
        except BaseException:
            answer.close()
            raise
        return answer, events, first

    async def _cancel_quietly(self, node: Node, execution_id: str) -> None:
        try:
            await node.client.cancel(execution_id)
        except RemoteError:
            pass
        record = self.records.get(execution_id)
        if record is not None:
            await self.settle_one(record)

    async def cancel(self, execution_id: str, signal: str = "SIGTERM") -> dict:
        record = self.get(execution_id)
        node = self.registry.get(record["node_id"])
        return await node.client.cancel(execution_id, signal)

    async def events(self, execution_id: str, offset: int, follow: bool) -> AsyncIterator[bytes]:
        """The execution's events from the node's own log (reattach after a break)."""
        record = self.get(execution_id)
        node = self.registry.get(record["node_id"])
        what = f"node {node.node_id!r}"
        opening = node.client.open_execution_events(execution_id, offset, follow, what)
        answer: Answer = await self.links.call(node, opening)
        try:
            stream: Guarded = self.links.guard(node, answer)
            async for chunk in stream:
                yield chunk
        finally:
            answer.close()

    def _on_node_state(self, node: Node, old: str, new: str) -> None:
        """A lost node answers again: settle its executions now, not at the next round."""
        if old == "lost" and node.answering:
            task = asyncio.get_running_loop().create_task(self.settle_unknown(node.node_id))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
