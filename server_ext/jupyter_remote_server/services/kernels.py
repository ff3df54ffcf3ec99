"""Each kernel's session containers: where they live, and removing them when it shuts down."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from traitlets import Float
from traitlets.config import LoggingConfigurable

from jupyter_remote.protocol.bodies import memory_bytes
from jupyter_remote.protocol.errors import Conflict, NotFound, RemoteError
from jupyter_remote_server.nodes.labels import shown
from jupyter_remote_server.services.user_quota import ask_of
from jupyter_remote_server.services.users import SERVER, Caller, id_used

log = logging.getLogger("jupyter_remote_server")

SESSION_FIELDS = ("image", "memory", "cpus", "pids_limit", "network", "gpus")
LIMIT_FIELDS = ("memory", "cpus", "pids_limit", "network", "gpus")  # fixed when it is made


class KernelSessions(LoggingConfigurable):
    """Maps (kernel, image) to one session on one node, so a kernel's files stay put.

    Made with `parent=` the RemoteManager, whose registry, pool and store it uses.
    """

    stop_wait = Float(
        10.0,
        help="At the server's stop, the most seconds spent removing its kernels' sessions "
        "(a node that does not answer must not hold the stop up; what is left is removed "
        "at the next start).",
    ).tag(config=True)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.registry = self.parent.registry
        self.pool = self.parent.pool
        self.store = self.parent.store
        self.quota = self.parent.quota
        self.sessions: dict[str, dict] = {r["key"]: r for r in self.store.load("kernel_session")}
        self.version = 0  # moves on every session made or forgotten (the sessions view's cache)
        # one lock per (owner, image): a kernel's cells wait for its session, not for
        # every other kernel's (sessions are made concurrently)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # key -> (lock, [users])
        self.closed = False  # set at the server's stop: nothing is removed after it

    @staticmethod
    def key(kernel_id: str, image: str) -> str:
        return f"{kernel_id}/{image}"

    async def ensure(
        self,
        kernel_id: str,
        image: str,
        node_id: str | None,
        body: dict,
        kind: str = "kernel",
        caller: Caller = SERVER,
    ) -> dict:
        """The owner's session for this image, made on first use.

        Owners are kernels (removed when the kernel shuts down) or API clients such as
        RemoteDockerEnvironment (kind "client", removed by their cleanup()).
        """
        key = self.key(kernel_id, image)
        if node_id:
            self.registry.get(node_id)  # an unknown node is a 404 before anything else
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._ensure_locked(key, kernel_id, image, node_id, body, kind, caller)
        finally:
            users[0] -= 1
            if not users[0]:  # nobody holds or waits for it: the map stays small
                del self._locks[key]

    async def _ensure_locked(
        self,
        key: str,
        kernel_id: str,
        image: str,
        node_id: str | None,
        body: dict,
        kind: str,
        caller: Caller,
    ) -> dict:
        known = self.sessions.get(key)
        on = body.get("on")
        if known and not caller.sees(known):  # another user's owner id: no word about it
            raise id_used("session owner", kernel_id, "duplicate_owner")
        if known:
            if node_id and node_id != known["node_id"]:
                raise Conflict(
                    f"this kernel's {image} session lives on node {known['node_id']!r}; "
                    f"use --fresh to run on {node_id!r}",
                    reason="session_elsewhere",
                )
            if on:
                self._refuse_elsewhere(known, image, on)
            # a busy node still takes its sessions' cells: only silence stops them
            self.registry.answering(
                known["node_id"],
                ", which holds this kernel's session",
                "use --fresh, or %remote_cleanup to start over on another node",
            )
            return known
        # a named node without the labels is pick()'s 409
        self.pool.refuse_missing_image(
            image, [node_id] if node_id else None, None if node_id else on
        )
        node = self.pool.pick(node_id, image, on=on, gpus=body.get("gpus"))
        digest = hashlib.sha1(image.encode()).hexdigest()[:8]
        session_id = f"k-{kernel_id}-{digest}"
        spec = {k: body[k] for k in SESSION_FIELDS if body.get(k) is not None}
        holder = f"session:{key}"
        self.quota.take(caller.quota_key, holder, ask_of(body, True), "this session")
        node.placing += 1  # the pool counts it from now: a burst of new kernels spreads
        try:
            made = await node.client.create_session(
                session_id=session_id, **{**spec, "image": image}
            )
        except BaseException:
            self.quota.give_back(holder)
            raise
        finally:
            node.placing -= 1
        record = {
            "key": key,
            "kernel_id": kernel_id,
            "image": image,
            "node_id": node.node_id,
            "session_id": session_id,
            "kind": kind,
            # `gpus` as asked (a count or devices), not the devices the agent gave
            "limits": {k: made.get("gpu_request" if k == "gpus" else k) for k in LIMIT_FIELDS},
            "quota": ask_of(body, True),
        }
        if caller.user is not None:
            record["user"] = caller.user
        self.sessions[key] = record
        self.version += 1
        self.registry.sessions.note(node.node_id, made)
        self.store.save("kernel_session", key, record)
        log.info("kernel %s: session %s on node %s", kernel_id, session_id, node.node_id)
        return record

    def _refuse_elsewhere(self, known: dict, image: str, on: dict) -> None:
        """A 409 when the session lives on a node without the labels the cell asks for:
        its files and variables are there, so it is never moved (nor the cell run
        elsewhere without them)."""
        node = self.registry.get(known["node_id"])
        if node.has_labels(on):
            return
        raise Conflict(
            f"this kernel's {image} session lives on node {node.node_id!r}, which does not "
            f"have {shown(on)} (it has {shown(node.labels)}); use --fresh for a one-off "
            "container there, or %remote_cleanup to start over on a matching node "
            "(the session's files and variables go with it)",
            reason="session_elsewhere",
        )

    def forget(self, kernel_id: str, image: str) -> dict | None:
        """Drop the record of a session its node no longer has; the next ensure makes one."""
        key = self.key(kernel_id, image)
        record = self.sessions.pop(key, None)
        self.version += 1
        self.store.delete("kernel_session", key)
        self.quota.give_back(f"session:{key}")
        return record

    @staticmethod
    def unmet_limits(session: dict, body: dict) -> list[str]:
        """A notice when a cell asks for limits its existing session was not made with."""
        have = session.get("limits") or {}
        asked = []
        for field in LIMIT_FIELDS:
            want = body.get(field)
            if want is None or have.get(field) is None:
                continue
            if _normal(field, want) != _normal(field, have[field]):
                asked.append(f"{field}={_shown(field, want)} (it has {_shown(field, have[field])})")
        if not asked:
            return []
        return [
            f"limits apply when a session is made: this kernel's session on node "
            f"{session['node_id']!r} keeps its own, so {', '.join(asked)} was not applied. "
            "Run %remote_cleanup to remove the session (and its files) and get a new one "
            "with these limits, or use --fresh for a one-off container."
        ]

    def for_kernel(self, kernel_id: str, caller: Caller = SERVER) -> list[dict]:
        """The owner's sessions the caller may see."""
        return [r for r in self.sessions.values() if r["kernel_id"] == kernel_id and caller.sees(r)]

    def kernel_ids(self) -> set[str]:
        """Owners that are kernels (client-owned sessions are not tied to a kernel)."""
        return {
            r["kernel_id"] for r in self.sessions.values() if r.get("kind", "kernel") == "kernel"
        }

    async def remove_kernel(self, kernel_id: str, caller: Caller = SERVER) -> list[dict]:
        """Delete the kernel's session containers (those the caller may see) on their nodes."""
        removed = []
        if self.closed:  # the server stopped: its agent connections and store are closed
            return removed
        for record in self.for_kernel(kernel_id, caller):
            try:
                node = self.registry.get(record["node_id"])
                await node.client.delete_session(record["session_id"])
                node.gpus_freed |= bool((record.get("limits") or {}).get("gpus"))
            except NotFound:
                pass  # the node or the session is gone already
            except RemoteError as exc:
                log.warning("could not remove session %s: %s", record["session_id"], exc)
                continue  # kept, so a later clean-up tries again
            self.sessions.pop(record["key"], None)
            self.version += 1
            self.store.delete("kernel_session", record["key"])
            self.quota.give_back(f"session:{record['key']}")
            removed.append(record)
        return removed

    async def remove_at_stop(self) -> tuple[int, list[dict]]:
        """The server is stopping and shuts its kernels down next: remove their sessions
        now, while the agent connections and the store are open (the kernels' shutdown
        events come after the extension has stopped). All kernels at once, for at most
        `stop_wait` seconds; a session not removed by then is kept in the store, and the
        next start's housekeeping removes it (its kernel is gone then). Client-owned
        sessions stay: their owners remove them. Answers (kernels, removed)."""
        mine = [r for r in self.sessions.values() if r.get("kind", "kernel") == "kernel"]
        kernels = sorted({r["kernel_id"] for r in mine})
        removals = asyncio.gather(*(self.remove_kernel(k) for k in kernels), return_exceptions=True)
        try:
            outcomes = await asyncio.wait_for(removals, self.stop_wait)
        except asyncio.TimeoutError:
            outcomes = []
            log.warning(
                "not every kernel session was removed within %g s; the next start removes the rest",
                self.stop_wait,
            )
        for kernel_id, outcome in zip(kernels, outcomes, strict=False):
            if isinstance(outcome, BaseException):  # one line: the server is stopping
                log.warning("could not remove the sessions of kernel %s: %r", kernel_id, outcome)
        self.closed = True
        return len(kernels), [r for r in mine if r["key"] not in self.sessions]


def _normal(field: str, value: object) -> object:
    """Values compared as numbers (bodies were checked on arrival: these parse)."""
    if field == "memory":
        return memory_bytes(value)
    if field in ("cpus", "pids_limit"):
        return float(value)
    return value


def _shown(field: str, value: object) -> str:
    if field == "memory" and isinstance(value, int):
        for unit, size in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if value % size == 0:
                return f"{value // size}{unit}"
    return str(value)
