"""The node registry: which agents exist, and whether each is healthy, suspect or lost."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import urlparse

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable

from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound, RemoteError, Unavailable
from jupyter_remote.protocol.server_answers import Node as NodeAnswer
from jupyter_remote.protocol.server_bodies import check_url as url_rule
from jupyter_remote_server.agents.client import NodeClient
from jupyter_remote_server.nodes.session_snapshots import SessionSnapshots

log = logging.getLogger("jupyter_remote_server")

USABLE = ("healthy", "busy")  # busy: CPU/memory pressure; still takes work
# answered its last poll in time; drained: its engine (Swarm) takes no new work there
ANSWERING = ("healthy", "busy", "unhealthy", "drained")
WARNING_CHECKS = ("cpu", "memory")  # pressure, for agents that give no severity


@dataclass
class Node:
    """One agent as the server sees it. Its token stays here: never in a model."""

    node_id: str
    url: str
    source: str  # config | api | join | swarm
    client: NodeClient
    token: str | None = None
    state: str = "unknown"  # unknown | healthy | busy | unhealthy | drained | suspect | lost
    reason: str = "not contacted yet"
    added_at: float = field(default_factory=time.time)
    last_seen: float | None = None  # monotonic
    last_seen_at: float | None = None  # wall clock
    health: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)
    inflight: int = 0  # executions this server is streaming from the node right now
    placing: int = 0  # picked for a cell or a session that has not started there yet
    gpus_freed: bool = False  # GPU work ended here since the last poll: its report is stale
    polling: bool = False
    provisional: bool = False  # named after its URL until the agent tells its own id
    instance: str | None = None  # a joined agent's process (made at its start)
    poll_error: str | None = None  # why the last poll failed (a refused certificate, say)
    labels: dict[str, str] = field(default_factory=dict)  # for placement (`on`)
    # the word of the engine under it (Swarm), which outranks polls: ("lost", why) for a
    # node it marks down, ("drained", why) for one it drains; None: polls decide
    verdict: tuple[str, str] | None = None

    @property
    def usable(self) -> bool:
        return self.state in USABLE

    @property
    def answering(self) -> bool:
        return self.state in ANSWERING

    @property
    def warnings(self) -> list[str]:
        """Messages of the failing warning checks: why a node is busy."""
        if not self.answering:
            return []  # an old sample says nothing about a silent node
        return [c.get("message", "") for c in failing(self.health, "warning")]

    def has_image(self, image: str | None) -> bool:
        images = self.resources.get("images")
        if not image or images is None:
            return True
        return image in images or f"{image}:latest" in images

    def has_labels(self, wanted: dict[str, str] | None) -> bool:
        """Whether the node has every one of these labels with these values."""
        return not wanted or all(self.labels.get(k) == v for k, v in wanted.items())

    def load(self) -> tuple[int, float]:
        """Sort key for choosing: fewer running executions, then more free memory."""
        # counted from the pick, not from the first byte: a burst spreads over the pool
        running = max(self.inflight, self.resources.get("executions", {}).get("running", 0))
        running += self.placing
        running += self.resources.get("jobs", {}).get("running_tasks", 0)
        free = self.resources.get("memory", {}).get("available", 0)
        return running, -free

    def to_json(self) -> dict:
        """Its answer (GET nodes), built and checked by the protocol's Node model."""
        res = self.resources
        return NodeAnswer.answer(
            node_id=self.node_id,
            url=self.url,
            source=self.source,
            labels=self.labels,
            state=self.state,
            reason=self.reason,
            added_at=self.added_at,
            last_seen_at=self.last_seen_at,
            health=self.health.get("checks", []),
            warnings=self.warnings,
            cpu=res.get("cpu"),
            memory=res.get("memory"),
            disk=res.get("disk"),
            load_avg=res.get("load_avg"),
            containers=res.get("docker", {}).get("containers"),
            running_executions=self.load()[0],
            inflight=self.inflight,
            sessions=res.get("sessions", {}).get("count"),
            own_containers=res.get("own_containers", []),
            images=res.get("images", []),
            gpus=res.get("gpus"),
        )


def severity(check: dict) -> str:
    """A check's severity; agents from before severities name the pressure checks."""
    return check.get("severity") or (
        "warning" if check.get("name") in WARNING_CHECKS else "critical"
    )


def failing(health: dict, level: str) -> list[dict]:
    return [c for c in health.get("checks", []) if not c.get("ok") and severity(c) == level]


def state_of(health: dict) -> tuple[str, str]:
    """(state, reason) from an agent's /v1/health: pressure makes a node busy, not unhealthy.

    Agents that report `busy` judge themselves (`healthy` = no critical check fails); older
    ones say unhealthy for any failing check, so their checks are judged here by name.
    """
    critical = "; ".join(c.get("message", "") for c in failing(health, "critical"))
    warnings = "; ".join(c.get("message", "") for c in failing(health, "warning"))
    if "busy" in health:
        if not health.get("healthy"):
            return "unhealthy", critical or health.get("message") or "unhealthy"
        return ("busy", warnings or "busy") if health["busy"] else ("healthy", "ok")
    if critical or (not health.get("healthy") and not warnings):
        return "unhealthy", critical or health.get("message") or "unhealthy"
    return ("busy", warnings) if warnings else ("healthy", "ok")


def _refuse(node: Node, role: str, then: str) -> NoReturn:
    raise Unavailable(
        f"node {node.node_id!r}{role} is {node.state} ({node.reason}); {then}",
        reason="node_unavailable",
    )


def check_url(url: object) -> str:
    """An agent URL from config or the store (request bodies were checked on arrival)."""
    if not isinstance(url, str):
        raise BadRequest("url must be a string like http://host:9527", reason="bad_url")
    try:
        return url_rule(url)
    except ValueError as exc:
        raise BadRequest(f"url {exc}", reason="bad_url") from None


class NodeRegistry(LoggingConfigurable):
    """Adds, removes and polls nodes; tells listeners when a node's state changes."""

    poll_interval = Float(5.0, help="Seconds between health and resource polls of each node.")
    suspect_after = Float(10.0, help="Seconds of silence after which a node is suspect.")
    lost_after = Float(60.0, help="Seconds of silence after which a node is lost.")
    pool_maxsize = Int(64, help="Most connections per node (RemoteApp.pool_maxsize).")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.nodes: dict[str, Node] = {}
        self.listeners: list[Callable[[Node, str, str], None]] = []
        self._task: asyncio.Task | None = None
        self._polls: set[asyncio.Task] = set()
        self.sessions = SessionSnapshots(self.poll_interval)
        self.version = 0  # moves when a node is added, removed or renamed (shared answers)
        self.starved_at = -float("inf")  # when a poll last failed: this process out of files

    def make_client(self, url: str, token: str | None) -> NodeClient:
        """One keep-alive client per node; never retries (seed 000)."""
        return NodeClient(
            url,
            token,
            pool_maxsize=self.pool_maxsize,
            connect_timeout=min(5.0, self.suspect_after / 2),
        )

    def get(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            known = ", ".join(sorted(self.nodes)) or "none"
            raise NotFound(
                f"no node {node_id!r} in the pool (known: {known})", reason="node_not_found"
            ) from None

    def usable(self, node_id: str, role: str = "", then: str = "work never goes to it") -> Node:
        """The node, if it may take work now (healthy or busy); else a 503 saying why."""
        node = self.get(node_id)
        return node if node.usable else _refuse(node, role, then)

    def answering(self, node_id: str, role: str = "", then: str = "work never goes to it") -> Node:
        """The node, if it answers polls (even busy or unhealthy); else usable()'s 503.

        A kernel's session lives on one node, so its cells follow it there while it answers;
        only silence (suspect, lost, never contacted) refuses them.
        """
        node = self.get(node_id)
        return node if node.answering else _refuse(node, role, then)

    def list(self) -> list[dict]:
        return [n.to_json() for n in self.nodes.values()]

    def add_known(self, url: str, token: str | None, source: str, node_id: str | None) -> Node:
        """A node from config or from the store: added even if it does not answer now."""
        url = check_url(url)
        client = self.make_client(url, token)
        node = Node(
            node_id=node_id or urlparse(url).netloc,
            url=url,
            source=source,
            client=client,
            token=token,
            provisional=node_id is None,
        )
        self.nodes[node.node_id] = node
        self.version += 1
        return node

    async def add_checked(self, url: str, token: str | None, source: str) -> tuple[Node, bool]:
        """A node added at run time: it must answer now. Returns (node, is_new)."""
        url = check_url(url)
        client = self.make_client(url, token)
        try:
            info = await client.info()
        except RemoteError as exc:
            await client.close()
            raise BadRequest(
                f"cannot add {url}: the agent did not answer as expected ({exc.message})",
                reason="agent_unreachable",
            ) from None
        node_id = info["node_id"]
        existing = self.nodes.get(node_id)
        if existing and existing.url != url:
            await client.close()
            raise Conflict(
                f"node id {node_id!r} is already used by {existing.url}", reason="duplicate_node"
            )
        if existing:  # a re-join or a repeated add: refresh its token
            _close_later(existing.client)
            existing.client, existing.token = client, token
            return existing, False
        node = Node(node_id=node_id, url=url, source=source, client=client, token=token)
        self.nodes[node_id] = node
        self.version += 1
        return node, True

    def set_verdict(self, node: Node, verdict: tuple[str, str] | None) -> None:
        """The engine's word on a node (swarm.py), applied at once: lost (its work is
        marked lost now, not after lost_after), drained (no new work), or None (polls
        decide again; a lost node turns back at its next answer, then is reconciled)."""
        if verdict == node.verdict:
            return
        node.verdict = verdict
        if verdict is not None:
            if verdict[0] == "lost" or node.answering:
                self._set(node, *verdict)
        elif node.state == "drained":  # back to what its last answer said
            self._set(node, *state_of(node.health))

    def remove(self, node_id: str) -> Node:
        node = self.get(node_id)
        del self.nodes[node_id]
        self.version += 1
        self.sessions.forget(node_id)
        _close_later(node.client)
        return node

    # -- polling -----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task:
            self._task.cancel()
        for poll in list(self._polls):
            poll.cancel()

    async def close(self) -> None:
        """Close every node's connections (the server is stopping)."""
        for node in list(self.nodes.values()):
            await node.client.close()

    async def _run(self) -> None:
        tick = min(0.5, self.poll_interval, self.suspect_after / 4)
        next_poll = 0.0
        while True:
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self.poll_interval
                for node in list(self.nodes.values()):
                    if not node.polling:
                        node.polling = True
                        poll = asyncio.get_running_loop().create_task(self._poll(node))
                        self._polls.add(poll)
                        poll.add_done_callback(self._polls.discard)
            for node in list(self.nodes.values()):
                self._age(node)
            # wake at the next poll or the moment a node's silence crosses a limit, so a
            # node turns lost at lost_after, not up to a tick later
            wake = min(tick, next_poll - now, self._next_limit(time.monotonic()))
            await asyncio.sleep(max(0.005, wake))

    def _next_limit(self, now: float) -> float:
        """Seconds until the first node's silence passes suspect_after or lost_after."""
        soonest = float("inf")
        for node in self.nodes.values():
            seen = node.last_seen if node.last_seen is not None else self._added_mono(node)
            for limit in (self.suspect_after, self.lost_after):
                if seen + limit >= now:
                    soonest = min(soonest, seen + limit - now + 0.001)
        return soonest

    async def poll_now(self, node: Node) -> None:
        """Poll one node at once (after it is added)."""
        node.polling = True
        await self._poll(node)

    async def _poll(self, node: Node) -> None:
        try:
            wait = max(1.0, min(10.0, self.suspect_after / 2))
            health = await node.client.health(wait)
            resources = await node.client.resources(wait)
        except RemoteError as exc:
            if exc.reason == "too_many_open_files":  # our own shortage says nothing of the node
                self.starved_at = time.monotonic()
            node.poll_error = exc.message
            if node.state == "unknown" or node.answering:
                node.reason = f"last poll failed: {exc.message}"
            return
        finally:
            node.polling = False
        node.last_seen, node.last_seen_at = time.monotonic(), time.time()
        node.health, node.resources, node.poll_error = health, resources, None
        node.gpus_freed = False
        own_id = health.get("node_id")
        if node.provisional and own_id and own_id not in self.nodes:
            # before any work reached it (work needs a first answer): take the agent's name
            self.nodes.pop(node.node_id, None)
            node.node_id, node.provisional = own_id, False
            self.nodes[own_id] = node
            self.version += 1
        state = state_of(health)
        if node.verdict and (node.verdict[0] == "lost" or state[0] in ANSWERING):
            state = node.verdict  # its engine's word (Swarm: down, drained) outranks a poll
        self._set(node, *state)
        await self.sessions.after_poll(node)  # after liveness: a slow list delays no state

    def _age(self, node: Node) -> None:
        if time.monotonic() - self.starved_at < self.suspect_after:
            return  # polls failed for want of a descriptor here: silence is not the node's
        seen = node.last_seen
        silent = time.monotonic() - (seen if seen is not None else self._added_mono(node))
        why = f"; last poll failed: {node.poll_error}" if node.poll_error else ""
        if silent > self.lost_after and node.state != "lost":
            limit = f"lost after {self.lost_after:g} s"
            self._set(node, "lost", f"silent for {silent:.0f} s ({limit}){why}")
        elif self.suspect_after < silent <= self.lost_after and node.state not in (
            "suspect",
            "lost",
        ):
            limit = f"suspect after {self.suspect_after:g} s"
            self._set(node, "suspect", f"silent for {silent:.0f} s ({limit}){why}")

    def _added_mono(self, node: Node) -> float:
        return time.monotonic() - (time.time() - node.added_at)

    def _set(self, node: Node, state: str, reason: str) -> None:
        old = node.state
        node.state, node.reason = state, reason
        if old != state:
            log.info("node %s: %s -> %s (%s)", node.node_id, old, state, reason)
            for listener in self.listeners:
                listener(node, old, state)


def _close_later(client: NodeClient) -> None:
    """Close a client no longer used; streams it still serves end with their connections."""
    task = asyncio.get_running_loop().create_task(client.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task] = set()
