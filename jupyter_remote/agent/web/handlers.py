"""Thin tornado handlers for the agent's versioned JSON API (docs/agent-api.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from typing import TypeVar

from tornado import web
from tornado.iostream import StreamClosedError

from jupyter_remote.agent.core import Agent
from jupyter_remote.agent.eventlog import read_file
from jupyter_remote.agent.web.wire import read_body, token_matches
from jupyter_remote.protocol.errors import BadRequest, NotFound, PayloadTooLarge, RemoteError, Unauthorized
from jupyter_remote.protocol.agent_openapi import agent_openapi
from jupyter_remote.protocol.bodies import (
    CancelBody,
    ExecutionBody,
    JobBody,
    LegacyExecuteBody,
    SessionBody,
)
from jupyter_remote.protocol.queries import PageQuery, page_query
from jupyter_remote.protocol.validation import parse_body
from jupyter_remote.http.relay import BodyWriter, ClientGone, as_ndjson, relay, wants_records
from jupyter_remote.protocol.records import RECORDS_TYPE, Splitter, events, starts_record

log = logging.getLogger("jupyter_remote.agent")
M = TypeVar("M")
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class BodyLimits:
    """Request body caps in bytes: executions carry whole cells, everything else is small."""

    execution: int = 32 << 20
    other: int = 1 << 20

    @property
    def largest(self) -> int:
        return max(self.execution, self.other)


@web.stream_request_body
class AgentHandler(web.RequestHandler):
    """Bearer-token auth, a size cap on bodies, JSON in and out, JSON errors."""

    agent: Agent
    carries_cells = False  # True where a POST body holds a cell: it gets the larger cap

    def initialize(self, agent: Agent, token: str | None, limits: BodyLimits) -> None:
        self.agent = agent
        agent.handlers.add(self)  # so a stopping agent can let answers in flight finish
        self._token = token
        self._max_body = limits.other
        if self.carries_cells and self.request.method == "POST":
            self._max_body = limits.execution
        self._body = bytearray()

    def prepare(self) -> None:
        if self._token:
            given = self.request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not token_matches(value.strip(), self._token):
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

    def body_as(self, model: type[M]) -> M:
        """The typed body, or a 400 naming the field and the rule; before anything happens."""
        return read_body(bytes(self._body), model)

    def send_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def flag(self, name: str) -> bool:
        return self.get_query_argument(name, "0").lower() in ("1", "true", "yes")

    def int_arg(self, name: str, default: int = 0) -> int:
        raw = self.get_query_argument(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(
                f"{name} must be an integer; got {raw!r}", reason=f"bad_{name}"
            ) from None
        if value < 0:
            raise BadRequest(f"{name} must be >= 0; got {value}", reason=f"bad_{name}")
        return value

    async def stream(self, chunks, content_type: str = NDJSON) -> None:
        """Send chunks as they come; a client that leaves only stops this copy."""
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = asyncio.Event()
        try:
            body = BodyWriter(self)
            await relay(chunks, body.write, body.flush, self._gone)
            self.finish()
        except (StreamClosedError, ClientGone):
            req = self.request
            log.info("client left %s %s; the command goes on", req.method, req.path)

    async def stream_events(self, chunks) -> None:
        """An execution's event records; NDJSON unless the client asked for records."""
        if wants_records(self.request.headers.get("Accept")):
            await self.stream(chunks, RECORDS_TYPE)
        else:
            await self.stream(as_ndjson(chunks))

    def on_connection_close(self) -> None:
        if getattr(self, "_gone", None) is not None:
            self._gone.set()

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, RemoteError):
            if self._finished:
                return
            if self._headers_written:  # mid-stream: nothing left to do but close
                self.finish()
                return
            self.clear()
            self.send_json(e.to_json(), e.status)
            return
        super()._handle_request_exception(e)

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        if status_code == 500 and self.agent.stopping:  # cut off by the loop's shutdown
            if self._headers_written:
                self.finish()
                return
            self.clear()
            self.send_json({"message": "the agent is stopping", "reason": "agent_stopping"}, 503)
            return
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": self._reason, "reason": "http_error"}))


class InfoHandler(AgentHandler):
    def get(self) -> None:
        self.send_json(self.agent.info())


class HealthHandler(AgentHandler):
    def get(self) -> None:
        self.send_json(self.agent.health())


class ResourcesHandler(AgentHandler):
    def get(self) -> None:
        self.send_json(self.agent.resources())


class OpenApiHandler(AgentHandler):
    """The API's OpenAPI 3.1 document, generated from the protocol's models."""

    def get(self) -> None:
        self.send_json(agent_openapi())


class SessionsHandler(AgentHandler):
    def get(self) -> None:
        self.send_json({"sessions": self.agent.sessions.list()})

    async def post(self) -> None:
        sid, spec, idle = self.agent.sessions.parse(self.body_as(SessionBody))
        session = await self.agent.blocking(self.agent.sessions.create, sid, spec, idle)
        self.send_json(session.to_json(), 201)


class SessionHandler(AgentHandler):
    def get(self, sid: str) -> None:
        self.send_json(self.agent.sessions.get(sid).to_json())

    async def delete(self, sid: str) -> None:
        self.agent.sessions.get(sid)
        self.send_json(await self.agent.blocking(self.agent.sessions.delete, sid))


class ExecutionsHandler(AgentHandler):
    carries_cells = True

    def get(self) -> None:
        got = self.agent.executions.list(page_query(PageQuery, self.request.query_arguments))
        self.send_json({"executions": got["items"], "next": got["next"]})

    async def post(self) -> None:
        ex = self.agent.executions.parse(self.body_as(ExecutionBody))
        if ex.mode == "fresh":
            await self.agent.blocking(self.agent.factory.check_image, ex.image)
        self.agent.executions.claim(ex)
        self.agent.executions.start(ex, asyncio.get_running_loop())
        await self.stream_events(ex.log.read(0, follow=True))


class ExecutionHandler(AgentHandler):
    def get(self, execution_id: str) -> None:
        self.send_json(self.agent.executions.get(execution_id))


class ExecutionEventsHandler(AgentHandler):
    async def get(self, execution_id: str) -> None:
        executions = self.agent.executions
        executions.get(execution_id)
        offset = self.int_arg("offset")
        try:
            at_start = await self.agent.blocking(
                starts_record, executions.log_path(execution_id), offset
            )
        except FileNotFoundError:
            executions.get(execution_id)  # 404 expired
            raise
        if not at_start:
            raise BadRequest(
                f"offset {offset} is not where an event of {execution_id} starts: resume at "
                "the byte count of whole events read (records), or 0",
                reason="bad_offset",
            )
        ex = executions.running.get(execution_id)
        if ex is not None:
            await self.stream_events(ex.log.read(offset, follow=self.flag("follow")))
        else:
            try:  # opened now: a record that retention removes meanwhile reads to its end
                await self.stream_events(read_file(executions.log_path(execution_id), offset))
            except FileNotFoundError:
                executions.get(execution_id)  # 404 expired
                raise


class ExecutionCancelHandler(AgentHandler):
    async def post(self, execution_id: str) -> None:
        sig = self.body_as(CancelBody).signal
        executions = self.agent.executions
        executions.get(execution_id)
        reason = "cancel requested" if sig == "SIGTERM" else f"cancel requested ({sig})"
        self.send_json(await self.agent.blocking(executions.cancel, execution_id, reason, sig))


class JobsHandler(AgentHandler):
    async def get(self) -> None:
        jobs = self.agent.jobs
        if self.get_query_argument("since", None) is None:
            got = jobs.list(page_query(PageQuery, self.request.query_arguments))
            self.send_json(
                {
                    "jobs": got["items"],
                    "next": got["next"],
                    "epoch": jobs.epoch,
                    "version": jobs.version,
                }
            )
            return
        since, wait = self.int_arg("since"), min(self.int_arg("wait"), 60)
        deadline = asyncio.get_running_loop().time() + wait
        while jobs.version <= since and not self.agent.stopping:  # answer at the first change
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await jobs.changes.wait(left)
        self.send_json(jobs.changed_since(since))

    async def post(self) -> None:
        job = self.agent.jobs.parse(self.body_as(JobBody))
        self.send_json(await self.agent.blocking(self.agent.jobs.submit, job), 201)


class JobHandler(AgentHandler):
    def get(self, job_id: str) -> None:
        self.send_json(self.agent.jobs.get(job_id))

    async def delete(self, job_id: str) -> None:
        self.agent.jobs.get(job_id)
        self.send_json(await self.agent.blocking(self.agent.jobs.delete, job_id))


class JobLogsHandler(AgentHandler):
    async def get(self, job_id: str) -> None:
        jobs = self.agent.jobs
        jobs.get(job_id)
        task, offset = self.int_arg("task"), self.int_arg("offset")
        jobs.log_path(job_id, task)
        await self.stream(
            jobs.read_log(job_id, task, offset, self.flag("follow")), "text/plain; charset=utf-8"
        )


class JobStopHandler(AgentHandler):
    async def post(self, job_id: str) -> None:
        self.agent.jobs.get(job_id)
        self.send_json(await self.agent.blocking(self.agent.jobs.stop, job_id))


class ExecuteHandler(AgentHandler):
    """Seed 000's plain endpoint: {"command", "timeout"} in, {"output", "returncode"} out."""

    carries_cells = True

    async def post(self) -> None:
        agent = self.agent
        legacy = self.body_as(LegacyExecuteBody)
        body = legacy.model_dump(exclude={"cwd"}, exclude_none=True)
        body["workdir"] = legacy.workdir or legacy.cwd
        body.setdefault("execution_id", f"x-{os.urandom(8).hex()}")
        if legacy.session_id is None:
            if legacy.image is not None:
                await agent.blocking(agent.factory.check_image, legacy.image)
            body["session_id"] = await agent.blocking(agent.default_session, legacy.image)
        ex = agent.executions.parse(parse_body(ExecutionBody, body))
        agent.executions.claim(ex)
        agent.executions.start(ex, asyncio.get_running_loop())
        output, splitter = [], Splitter()
        async for chunk in ex.log.read(0, follow=True):
            for event in events(splitter.feed(chunk)):
                if event["event"] in ("stdout", "stderr"):
                    output.append(event["data"])
        if ex.message and ex.status != "completed":
            output.append(f"\n{ex.message}\n")
        self.send_json(
            {
                "output": "".join(output),
                "returncode": ex.returncode,
                "status": ex.status,
                "timed_out": ex.timed_out,
                "duration": ex.duration,
                "execution_id": ex.execution_id,
                "node_id": agent.node_id,
            }
        )


class NotFoundHandler(AgentHandler):
    def prepare(self) -> None:
        super().prepare()
        raise NotFound(
            f"no such endpoint: {self.request.method} {self.request.path} (see docs/agent-api.md)",
            reason="no_endpoint",
        )


def make_app(agent: Agent, token: str | None, limits: BodyLimits) -> web.Application:
    """The tornado application serving one agent."""
    from jupyter_remote.agent.web.transfers import ROUTES as TRANSFER_ROUTES

    kw = {"agent": agent, "token": token, "limits": limits}
    ident = r"([^/]+)"
    routes = [
        (r"/v1/?", InfoHandler),
        (r"/v1/health", HealthHandler),
        (r"/v1/resources", ResourcesHandler),
        (r"/v1/openapi.json", OpenApiHandler),
        (r"/v1/sessions", SessionsHandler),
        (rf"/v1/sessions/{ident}", SessionHandler),
        (r"/v1/executions", ExecutionsHandler),
        (rf"/v1/executions/{ident}", ExecutionHandler),
        (rf"/v1/executions/{ident}/events", ExecutionEventsHandler),
        (rf"/v1/executions/{ident}/cancel", ExecutionCancelHandler),
        (r"/v1/jobs", JobsHandler),
        (rf"/v1/jobs/{ident}", JobHandler),
        (rf"/v1/jobs/{ident}/logs", JobLogsHandler),
        (rf"/v1/jobs/{ident}/stop", JobStopHandler),
        (r"/execute", ExecuteHandler),
        *TRANSFER_ROUTES,
    ]
    return web.Application(
        [(p, h, kw) for p, h in routes],
        default_handler_class=NotFoundHandler,
        default_handler_args=kw,
    )
