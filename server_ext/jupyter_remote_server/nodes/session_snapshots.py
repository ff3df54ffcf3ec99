"""Each node's session list as of its last poll: what the Lab panel and GET /sessions show.

Ten open panels refreshing every 2 s used to ask every node for its sessions on every
refresh (743 agent calls a second at 200 nodes). Now the registry's poll also fetches the
list of the nodes someone looks at (asked for within `WATCH_FOR` seconds), and a request
reads that snapshot. Only a node with no fresh snapshot is asked at once, and then by one
call that every concurrent request shares.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from jupyter_remote.protocol.errors import RemoteError

AGENT_TIMEOUT = 5.0  # a node slower than this shows its sessions as "node unavailable"
WATCH_FOR = 60.0  # seconds a view keeps a node's list refreshed by the polls
REFRESH_POLLS = 2  # a watched list is refreshed every other poll (its running cells are ours)


@dataclass
class Snapshot:
    models: dict[str, dict]  # session id -> the agent's session model
    at: float  # monotonic


class SessionSnapshots:
    """Session lists by node id, refreshed by polls while someone looks at them."""

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.snapshots: dict[str, Snapshot] = {}
        self.watched_until: dict[str, float] = {}
        self._fetching: dict[str, asyncio.Future] = {}

    def fresh(self, node_id: str) -> Snapshot | None:
        """The node's snapshot if polls made it recently enough (a refresh every other
        poll, REFRESH_POLLS, with room for one that is late)."""
        snap = self.snapshots.get(node_id)
        max_age = (REFRESH_POLLS + 1) * self.poll_interval + AGENT_TIMEOUT
        return snap if snap and time.monotonic() - snap.at <= max_age else None

    def peek(self, node) -> dict[str, dict] | str | None:
        """What get() answers when it needs no call: the fresh snapshot, or why the node
        cannot tell; None when it must be asked. Marks it watched."""
        self.watched_until[node.node_id] = time.monotonic() + WATCH_FOR
        if not node.answering:
            return f"node {node.node_id!r} is {node.state}: {node.reason}"
        snap = self.fresh(node.node_id)
        return snap.models if snap is not None else None

    async def get(self, node) -> dict[str, dict] | str:
        """The node's sessions by id, or why it cannot tell now. Marks it watched."""
        known = self.peek(node)
        if known is not None:
            return known
        pending = self._fetching.get(node.node_id)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(node))
            self._fetching[node.node_id] = pending
            pending.add_done_callback(lambda _: self._fetching.pop(node.node_id, None))
        return await asyncio.shield(pending)

    def watched(self, node_id: str) -> bool:
        return self.watched_until.get(node_id, 0.0) > time.monotonic()

    async def after_poll(self, node) -> None:
        """Called by the registry after a node answered its poll: refresh a watched list."""
        if not self.watched(node.node_id) or node.node_id in self._fetching:
            return
        snap = self.snapshots.get(node.node_id)
        due = REFRESH_POLLS * self.poll_interval - self.poll_interval / 2
        if snap is None or time.monotonic() - snap.at >= due:
            await self._fetch(node)

    def note(self, node_id: str, model: dict) -> None:
        """A session this server just made: in the node's snapshot before its next poll."""
        snap = self.snapshots.get(node_id)
        if snap is not None:
            snap.models[model["session_id"]] = model

    def drop(self, node_id: str, session_id: str) -> None:
        """A session this server just removed."""
        snap = self.snapshots.get(node_id)
        if snap is not None:
            snap.models.pop(session_id, None)

    def forget(self, node_id: str) -> None:
        self.snapshots.pop(node_id, None)
        self.watched_until.pop(node_id, None)

    async def _fetch(self, node) -> dict[str, dict] | str:
        try:
            models = await asyncio.wait_for(
                node.client.sessions(AGENT_TIMEOUT, True), AGENT_TIMEOUT + 1
            )
        except (RemoteError, asyncio.TimeoutError) as exc:
            return f"node {node.node_id!r} did not answer: {exc}"
        by_id = {m["session_id"]: m for m in models}
        self.snapshots[node.node_id] = Snapshot(by_id, time.monotonic())
        return by_id
