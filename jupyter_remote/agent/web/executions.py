"""Execution endpoints: run a cell and stream its events, list, read, follow and cancel;
and seed 000's plain `POST /execute`."""

from __future__ import annotations

import asyncio
import os

from jupyter_remote.agent.eventlog import read_file
from jupyter_remote.agent.web.base import AgentHandler
from jupyter_remote.protocol.bodies import CancelBody, ExecutionBody, LegacyExecuteBody
from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.queries import PageQuery, page_query
from jupyter_remote.protocol.records import Splitter, events, starts_record
from jupyter_remote.protocol.validation import parse_body


class ExecutionsHandler(AgentHandler):
    carries_cells = True

    def get(self) -> None:
        got = self.agent.executions.list(page_query(PageQuery, self.request.query_arguments))
        self.send({"executions": got["items"], "next": got["next"]})

    async def post(self) -> None:
        ex = self.agent.executions.parse(self.body_as(ExecutionBody))
        if ex.mode == "fresh":
            await self.agent.blocking(self.agent.factory.check_image, ex.image)
        self.agent.executions.claim(ex)
        self.agent.executions.start(ex, asyncio.get_running_loop())
        await self.stream_events(ex.log.read(0, follow=True))


class ExecutionHandler(AgentHandler):
    def get(self, execution_id: str) -> None:
        self.send(self.agent.executions.get(execution_id))


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
        self.send(await self.agent.blocking(executions.cancel, execution_id, reason, sig))


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
