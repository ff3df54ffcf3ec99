"""Execution endpoints: run a cell and stream its events, list, read, follow and cancel;
and seed 000's plain `POST /execute`."""

from __future__ import annotations

import asyncio
import os

from jupyter_remote.agent.eventlog import read_file
from jupyter_remote.agent.quotas import ask_of
from jupyter_remote.agent.web.base import AgentHandler
from jupyter_remote.protocol.bodies import CancelBody, ExecutionBody, LegacyExecuteBody
from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.queries import PageQuery, page_query
from jupyter_remote.protocol.records import Splitter, events, starts_record
from jupyter_remote.protocol.validation import parse_body


class ExecutionPlanning:
    """For the handlers that run cells: the caller's own session, its quota."""

    async def plan(self, body: ExecutionBody):
        if body.session_id is not None:
            self.own("session", body.session_id)  # another tenant's: the unknown id's 404
        ex = self.agent.executions.parse(body)
        ex.tenant = self.tenant
        if ex.mode == "fresh":
            await self.agent.blocking(self.agent.factory.check_image, ex.image)
        return ex

    def claim(self, ex) -> None:
        """The id, its GPUs and (fresh) its share of the tenant's quota, all or nothing."""
        ask = ask_of(ex.spec) if ex.mode == "fresh" else None
        key = ("execution", ex.execution_id)
        with self.new_id("execution", ex.execution_id):
            if ask is None:
                self.agent.executions.claim(ex)
                return
            with self.agent.quotas.reserve(self.tenant, key, ask, "execution"):
                self.agent.executions.claim(ex)


class ExecutionsHandler(ExecutionPlanning, AgentHandler):
    carries_cells = True

    def get(self) -> None:
        query = page_query(PageQuery, self.request.query_arguments)
        got = self.agent.executions.list(query, self.visible)
        self.send({"executions": got["items"], "next": got["next"]})

    async def post(self) -> None:
        ex = await self.plan(self.body_as(ExecutionBody))
        self.claim(ex)
        self.agent.executions.start(ex, asyncio.get_running_loop())
        await self.stream_events(ex.log.read(0, follow=True))


class ExecutionHandler(AgentHandler):
    def get(self, execution_id: str) -> None:
        self.send(self.own("execution", execution_id))


class ExecutionEventsHandler(AgentHandler):
    async def get(self, execution_id: str) -> None:
        executions = self.agent.executions
        self.own("execution", execution_id)
        offset = self.int_arg("offset")
        try:
            at_start = await self.agent.blocking(
                starts_record, executions.log_path(execution_id), offset
            )
        except FileNotFoundError:
            self.own("execution", execution_id)  # 404 expired
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
                self.own("execution", execution_id)  # 404 expired
                raise


class ExecutionCancelHandler(AgentHandler):
    async def post(self, execution_id: str) -> None:
        sig = self.body_as(CancelBody).signal
        executions = self.agent.executions
        self.own("execution", execution_id)
        reason = "cancel requested" if sig == "SIGTERM" else f"cancel requested ({sig})"
        self.send(await self.agent.blocking(executions.cancel, execution_id, reason, sig))


class ExecuteHandler(ExecutionPlanning, AgentHandler):
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
            body["session_id"] = await agent.blocking(
                agent.default_session, legacy.image, self.tenant
            )
        ex = await self.plan(parse_body(ExecutionBody, body))
        self.claim(ex)
        agent.executions.start(ex, asyncio.get_running_loop())
        output, splitter = [], Splitter()
        async for chunk in ex.log.read(0, follow=True):
            for event in events(splitter.feed(chunk)):
                if event["event"] in ("stdout", "stderr"):
                    output.append(event["data"])
        if ex.message and ex.status != "completed":
            output.append(f"\n{ex.message}\n")
        self.send(
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
