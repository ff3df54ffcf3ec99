"""The base of every agent handler: the shared JSON contract (http/handler.py) on tornado's
RequestHandler, with the caller's credential (a tenant or the operator), the one ownership
rule (tenants.py) and body caps."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from tornado import web

from jupyter_remote.agent import tenants
from jupyter_remote.agent.core import Agent
from jupyter_remote.agent.web.wire import read_body
from jupyter_remote.http.handler import JsonApiMixin, bearer
from jupyter_remote.protocol.errors import (
    Conflict,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    Unauthorized,
    Unavailable,
)

M = TypeVar("M")


LOOKUP = {
    "session": lambda agent, oid: agent.sessions.get(oid),
    "execution": lambda agent, oid: agent.executions.get(oid),
    "job": lambda agent, oid: agent.jobs.get(oid),
}


@dataclass(frozen=True)
class BodyLimits:
    """Request body caps in bytes: executions carry whole cells, everything else is small."""

    execution: int = 32 << 20
    other: int = 1 << 20

    @property
    def largest(self) -> int:
        return max(self.execution, self.other)


@web.stream_request_body
class AgentHandler(JsonApiMixin, web.RequestHandler):
    """Bearer-token auth, a size cap on bodies, JSON in and out, JSON errors."""

    agent: Agent
    carries_cells = False  # True where a POST body holds a cell: it gets the larger cap
    tenant: str | None = None  # who asks: a tenant's name, or None for the operator

    def initialize(self, agent: Agent, limits: BodyLimits) -> None:
        self.agent = agent
        agent.handlers.add(self)  # so a stopping agent can let answers in flight finish
        self._max_body = limits.other
        if self.carries_cells and self.request.method == "POST":
            self._max_body = limits.execution
        self._body = bytearray()

    def on_finish(self) -> None:
        self.agent.handlers.discard(self)  # answered: a stopping agent need not wait for it

    def prepare(self) -> None:
        given = self.request.headers.get("Authorization", "")
        scheme, value = bearer(given)
        known, self.tenant = self.agent.credentials.resolve(
            value if scheme.lower() == "bearer" else None
        )
        if not known:
            raise Unauthorized(
                "missing or wrong bearer token", reason="bad_token" if given else "no_token"
            )
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self._max_body:
            raise PayloadTooLarge(
                f"request body of {length} bytes is over the {self._max_body}-byte limit"
            )

    def data_received(self, chunk: bytes) -> None:
        self._body += chunk
        if len(self._body) > self._max_body:
            raise PayloadTooLarge(f"request body is over the {self._max_body}-byte limit")

    # -- tenants: one rule for every route ---------------------------------------------------
    def visible(self, owner: str | None) -> bool:
        return tenants.visible(self.tenant, owner)

    def own(self, kind: str, oid: str):
        """The record of a session, execution or job named in the request, if the caller
        may see it; for a tenant, another's object (live or gone) is the very 404 of an id
        never used. Every route that names an object goes through here."""
        node = self.agent.node_id
        try:
            record = LOOKUP[kind](self.agent, oid)
        except NotFound as exc:
            raise tenants.screen_gone(exc, self.tenant, kind, oid, node) from None
        owner = record.tenant if kind == "session" else record.get("tenant")
        if not self.visible(owner):
            try:  # the look an unknown id costs (disk, ledger), so the time tells less
                LOOKUP[kind](self.agent, f"never.{os.urandom(8).hex()}")
            except NotFound:
                pass
            raise tenants.unknown(kind, oid, node)
        return record

    @contextmanager
    def new_id(self, kind: str, oid: str) -> Iterator[None]:
        """Around a create: a run-once id another tenant used is a 409 that names no one."""
        try:
            yield
        except Conflict as exc:
            if exc.reason != f"duplicate_{kind}":
                raise
            raise tenants.id_taken(exc, self.tenant, kind, oid, self.agent.node_id) from None

    def body_as(self, model: type[M]) -> M:
        """The typed body, or a 400 naming the field and the rule; before anything happens."""
        return read_body(bytes(self._body), model)

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        """A request cut off by the loop's shutdown is told so (503), not a bare 500."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 500 and not isinstance(exc, RemoteError) and self.agent.stopping:
            exc = Unavailable("the agent is stopping", reason="agent_stopping")
            kwargs["exc_info"] = (type(exc), exc, None)
        super().send_error(status_code, **kwargs)
