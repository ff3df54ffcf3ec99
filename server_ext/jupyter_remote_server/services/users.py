"""Whose work it is: the Jupyter user behind a request, and what that user may see.

Executions, jobs and sessions record the user who made them. A user naming another
user's object gets exactly the 404 an unknown id gets (no hint that it exists); lists show
a user their own; the users in `c.RemoteApp.operators` see everything. On a one-user
server (jupyter_server's own identity provider, whose token requests are each a new
anonymous user) everything is that one user's, as before users were recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from jupyter_remote.protocol.errors import Conflict, NotFound

# jupyter_server's own providers: one user, whose token requests get random anonymous names
SINGLE_USER_PROVIDERS = ("jupyter_server.auth.identity",)


@dataclass(frozen=True)
class Caller:
    """Who asks: `user` None on a one-user server (everything is theirs)."""

    user: str | None = None
    operator: bool = False

    def sees(self, record: dict | None) -> bool:
        """A record made by no recorded user (before users were recorded, or on a one-user
        server) is everyone's."""
        if record is None or self.operator or self.user is None:
            return True
        owner = record.get("user")
        return owner is None or owner == self.user

    @property
    def quota_key(self) -> str:
        return self.user or ""


SERVER = Caller(None, operator=True)  # the server's own housekeeping


def not_found(kind: str, key: str) -> NotFound:
    """The 404 of an id that never existed; a foreign id gets this very one."""
    if kind == "execution":
        return NotFound(f"no execution {key!r}", reason="execution_not_found")
    if kind == "job":
        return NotFound(f"no job {key!r}", reason="job_not_found")
    raise ValueError(kind)


def session_not_found(owner: str, image: str) -> NotFound:
    return NotFound(
        f"no {image} session for {owner!r}: run a cell (or create the session) first",
        reason="session_not_found",
    )


def id_used(kind: str, key: str, reason: str | None = None) -> Conflict:
    """Another user's id: refused without a word about their record."""
    return Conflict(
        f"{kind} id {key!r} is already used; choose another",
        reason=reason or f"duplicate_{kind}",
    )


class Users:
    """The server's rule for users; the manager holds one, handlers ask it."""

    def __init__(self, mode: str, operators: list[str], identity_provider: object) -> None:
        self.operators = frozenset(operators)
        if mode == "auto":
            module = type(identity_provider).__module__
            mode = "single" if module in SINGLE_USER_PROVIDERS else "identity"
        self.mode = mode

    def caller(self, current_user: object) -> Caller:
        """The Caller for a handler's current_user (jupyter_server's User)."""
        if self.mode == "single":
            return Caller(None, operator=False)
        name = getattr(current_user, "username", None) or None
        return Caller(name, operator=name in self.operators)

    def check(self, manager, caller: Caller, kind: str, key: str) -> None:
        """404 as for an unknown id when `key` names another user's execution or job
        (live, stored, expired or deleted); otherwise nothing (the service answers)."""
        if caller.operator or caller.user is None:
            return
        if kind == "execution":
            record = manager.executions.records.get(key) or manager.store.get(kind, key)
        else:
            record = manager.jobs.jobs.get(key) or manager.store.get(kind, key)
        if record is None:
            record = manager.store.expired(kind, key)
        if record is None and kind == "job":
            record = manager.store.get("job_deleted", key)
        if not caller.sees(record):
            raise not_found(kind, key)


def node_view(manager, caller: Caller, node: dict) -> dict:
    """A node's answer with only the caller's own containers (an operator's: all): the
    pool is shared, another user's containers are no one else's business."""
    if caller.operator or caller.user is None:
        return node
    sessions = {r["session_id"] for r in manager.kernels.sessions.values() if caller.sees(r)}

    def mine(c: dict) -> bool:
        if c.get("session_id"):
            return c["session_id"] in sessions
        if c.get("execution_id"):
            record = manager.executions.records.get(c["execution_id"])
            return record is not None and caller.sees(record)
        if c.get("job_id"):
            job = manager.jobs.jobs.get(c["job_id"].rsplit(".", 1)[0])
            return job is not None and caller.sees(job)
        return False

    return {**node, "own_containers": [c for c in node.get("own_containers") or [] if mine(c)]}
