"""Job endpoints: submit, list (or wait on the change feed), read, delete, stop, and a
task's log."""

from __future__ import annotations

import asyncio

from jupyter_remote.agent.quotas import job_ask
from jupyter_remote.agent.web.base import AgentHandler
from jupyter_remote.protocol.bodies import JobBody
from jupyter_remote.protocol.queries import PageQuery, page_query


class JobsHandler(AgentHandler):
    async def get(self) -> None:
        jobs = self.agent.jobs
        if self.get_query_argument("since", None) is None:
            got = jobs.list(page_query(PageQuery, self.request.query_arguments), self.visible)
            self.send(
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
        self.send(jobs.changed_since(since, self.visible))

    async def post(self) -> None:
        jobs = self.agent.jobs
        job = jobs.parse(self.body_as(JobBody))
        job["tenant"] = self.tenant
        key = ("job", job["job_id"])
        with self.new_id("job", job["job_id"]):
            with self.agent.quotas.reserve(self.tenant, key, job_ask(job), "job"):
                self.send(await self.agent.blocking(jobs.submit, job), 201)


class JobHandler(AgentHandler):
    def get(self, job_id: str) -> None:
        self.send(self.own("job", job_id))

    async def delete(self, job_id: str) -> None:
        self.own("job", job_id)
        self.send(await self.agent.blocking(self.agent.jobs.delete, job_id))


class JobLogsHandler(AgentHandler):
    async def get(self, job_id: str) -> None:
        jobs = self.agent.jobs
        self.own("job", job_id)
        task, offset = self.int_arg("task"), self.int_arg("offset")
        jobs.log_path(job_id, task)
        await self.stream(
            jobs.read_log(job_id, task, offset, self.flag("follow")), "text/plain; charset=utf-8"
        )


class JobStopHandler(AgentHandler):
    async def post(self, job_id: str) -> None:
        self.own("job", job_id)
        self.send(await self.agent.blocking(self.agent.jobs.stop, job_id))
