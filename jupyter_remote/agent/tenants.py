"""Tenants on one agent: who a bearer credential is (a tenant, or the operator), what each
tenant may hold (its quota) and holds now, and the one rule for other tenants' objects.

The operator's credential is the agent's token; tenants come from the tenants file
(docs/security.md#tenants). A tenant sees and acts on its own sessions, executions and
jobs only: whatever names another's object gets the very 404 of an id never used, so
nothing tells it that the object exists. Quotas are checked and reserved under one lock
before anything is made, so concurrent requests cannot together go over.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from jupyter_remote.protocol.bodies import Memory
from jupyter_remote.protocol.common import Count, Id
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound
from jupyter_remote.protocol.validation import parse_body

log = logging.getLogger("jupyter_remote.agent")

KINDS = ("session", "execution", "job")


class TenantsFileError(Exception):
    """The tenants file cannot be read or is not valid: one line naming the file and why."""


# -- the file ----------------------------------------------------------------------------------
Token = Annotated[str, StringConstraints(min_length=8, max_length=1024, pattern=r"^[!-~]+$")]
Cpus = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


class QuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sessions: Count | None = None
    cpus: Cpus | None = None
    memory: Memory | None = None
    gpus: Count | None = None


class TenantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Token
    quota: QuotaBody = QuotaBody()


class TenantsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: dict[Id, TenantBody] = {}


@dataclass(frozen=True)
class Tenant:
    name: str
    token: str
    quota: dict  # quotas.QUOTA_KEYS present are limits; absent ones are no limit


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def load_tenants(path: str, operator_token: str = "") -> dict[str, Tenant]:
    """The tenants of `path`; TenantsFileError with one clear line. A file readable by
    others gets a warning (the tokens are secrets at rest), as the token file does."""
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode & 0o777
            raw = fh.read(4 << 20)
    except OSError as exc:
        raise TenantsFileError(f"cannot read the tenants file: {exc}") from None
    if mode & 0o077:
        print(
            f"warning: tenants file {path} is readable by others (mode {mode:04o}); make it "
            f"private with: chmod 600 {path}",
            file=sys.stderr,
        )
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise TenantsFileError(f"tenants file {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TenantsFileError(f'tenants file {path} must hold an object {{"tenants": ...}}')
    try:
        body = parse_body(TenantsBody, data)
    except BadRequest as exc:
        raise TenantsFileError(f"tenants file {path}: {exc.message}") from None
    seen: dict[bytes, str] = {}
    if operator_token:
        seen[_digest(operator_token)] = "the operator's token"
    out = {}
    for name, entry in body.tenants.items():
        key = _digest(entry.token)
        if key in seen:
            raise TenantsFileError(
                f"tenants file {path}: tenant {name!r} has the same token as {seen[key]}; "
                "every credential must be its own"
            )
        seen[key] = f"tenant {name!r}"
        quota = entry.quota.model_dump(exclude_none=True)
        out[name] = Tenant(name, entry.token, quota)
    return out


def write_tenant(path: str, name: str, token: str, quota: dict | None = None) -> None:
    """Add or replace one tenant in the tenants file (made, mode 600, if missing); the
    running agent picks it up within a second. For the join flow and operators' scripts."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        data = {"tenants": {}}
    data.setdefault("tenants", {})[name] = {"token": token, **({"quota": quota} if quota else {})}
    parse_body(TenantsBody, data)  # a 400-style error now rather than a file the agent refuses
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


class Credentials:
    """The operator's token and the tenants file, re-read when it changes (its mtime,
    looked at once a second at most) or on SIGHUP. With neither a token nor a tenants
    file (loopback development), every caller is the operator."""

    def __init__(self, operator_token: str = "", tenants_file: str = "") -> None:
        self.operator_token = operator_token or ""
        self.path = tenants_file
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._checked = 0.0
        self.tenants: dict[str, Tenant] = {}
        self._table: list[tuple[bytes, str | None]] = []
        if tenants_file and not os.path.exists(tenants_file):
            log.warning(
                "tenants file %s does not exist yet: no tenants until it is written "
                "(the join flow writes it; so can the operator)",
                tenants_file,
            )
        elif tenants_file:
            self._load(self._stat())  # TenantsFileError at start: the agent refuses to run
        self._build()

    @property
    def open_to_all(self) -> bool:
        return not self.operator_token and not self.path

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self, stamp) -> None:
        self.tenants = load_tenants(self.path, self.operator_token)
        self._stamp = stamp
        self._build()

    def _build(self) -> None:
        table: list[tuple[bytes, str | None]] = []
        if self.operator_token:
            table.append((_digest(self.operator_token), None))
        table += [(_digest(t.token), t.name) for t in self.tenants.values()]
        self._table = table

    def reload(self, force: bool = False) -> None:
        """Re-read the file if it changed (or `force`); a bad file keeps the last good one."""
        if not self.path:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < 1.0:
                return
            self._checked = now
            stamp = self._stat()
            if not force and stamp == self._stamp:
                return
            try:
                self._load(stamp)
            except TenantsFileError as exc:
                self._stamp = stamp  # logged once per change, not per request
                log.error("%s; keeping the %d tenants read before", exc, len(self.tenants))
                return
        log.info("tenants file read: %d tenants", len(self.tenants))

    def resolve(self, given: str | None) -> tuple[bool, str | None]:
        """(known, tenant): tenant None is the operator. Every credential is compared, in
        constant time and to the end, so the time taken tells nothing of which matched."""
        if self.open_to_all:
            return True, None
        self.reload()
        probe = _digest(given or "")
        found, who = False, None
        for digest, name in self._table:
            match = hmac.compare_digest(probe, digest)
            found |= match
            who = name if match else who
        return found and given is not None and given != "", who

    def quota(self, tenant: str | None) -> dict:
        entry = self.tenants.get(tenant) if tenant is not None else None
        return dict(entry.quota) if entry else {}


# -- ownership ---------------------------------------------------------------------------------
def unknown(kind: str, oid: str, node_id: str) -> NotFound:
    """The 404 of an id never used: the managers raise it, and so does every refusal of
    another tenant's object (the same status, reason and message)."""
    return NotFound(f"no {kind} {oid!r} on node {node_id!r}", reason=f"{kind}_not_found")


def visible(caller: str | None, owner: str | None) -> bool:
    """The operator (None) sees everything; a tenant only what it made."""
    return caller is None or caller == owner


def screen_gone(exc: NotFound, caller: str | None, kind: str, oid: str, node_id: str):
    """A 404 about a removed or expired record tells its owner how it ended; to any
    other tenant it is the plain 404 of an id never used."""
    if caller is None or exc.details.get("tenant") == caller:
        return exc
    return unknown(kind, oid, node_id)


def id_taken(exc: Conflict, caller: str | None, kind: str, oid: str, node_id: str) -> Conflict:
    """A run-once id already used: its owner hears today's 409 with the record; another
    tenant only that the id is taken, nothing of whose it is."""
    record = exc.details.get(kind)
    if caller is None or (isinstance(record, dict) and record.get("tenant") == caller):
        return exc
    return Conflict(
        f"{kind} id {oid!r} is already used on node {node_id!r}; ids are never reused: "
        "pick another",
        reason=exc.reason,
    )


def owner_of_holder(agent, holder: str) -> str | None:
    """Whose a GPU holder ("session:ID", "execution:ID", "job:ID/TASK") is."""
    kind, _, rest = holder.partition(":")
    if kind == "session":
        session = agent.sessions.sessions.get(rest)
        return session.tenant if session else None
    if kind == "execution":
        ex = agent.executions.running.get(rest)
        return ex.tenant if ex else None
    if kind == "job":
        job = agent.jobs.jobs.get(rest.rpartition("/")[0])
        return job.get("tenant") if job else None
    return None


def resources_for(agent, caller: str | None, report: dict) -> dict:
    """/v1/resources as a tenant sees it: its own containers and its own GPU holders
    (other devices still count as held, by no one it can name)."""
    if caller is None:
        return report
    sessions, running, jobs = agent.sessions.sessions, agent.executions.running, agent.jobs.jobs

    def mine(c: dict) -> bool:
        if c.get("session_id"):
            s = sessions.get(c["session_id"])
            return s is not None and s.tenant == caller
        if c.get("execution_id"):
            ex = running.get(c["execution_id"])
            return ex is not None and ex.tenant == caller
        if c.get("job_id"):
            job = jobs.get(c["job_id"])
            return job is not None and job.get("tenant") == caller
        return False

    out = dict(report)
    if isinstance(report.get("own_containers"), list):
        out["own_containers"] = [c for c in report["own_containers"] if mine(c)]
    gpus = report.get("gpus")
    if isinstance(gpus, dict) and isinstance(gpus.get("devices"), list):
        devices = [
            {**d, "held_by": [h for h in d["held_by"] if owner_of_holder(agent, h) == caller]}
            for d in gpus["devices"]
        ]
        out["gpus"] = {**gpus, "devices": devices}
    return out
