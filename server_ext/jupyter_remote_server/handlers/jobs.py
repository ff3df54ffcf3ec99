"""Jobs of tasks spread over the nodes: submit, list, wait for, stop, delete, read logs."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_remote.protocol.queries import PageQuery, page_query
from jupyter_remote.protocol.server_bodies import ServerJobBody
from jupyter_remote_server.handlers.base import RemoteHandler

MAX_WAIT = 300  # seconds a long-poll for a job's end may hold the connection


class JobsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        got = self.manager.jobs.list(
            page_query(PageQuery, self.request.query_arguments), self.caller
        )
        self.send({"jobs": got["items"], "next": got["next"]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body, data = self.body(ServerJobBody, "max_job_body")
        jobs = self.manager.jobs
        # only a notebook cell's job (--detach) is filed under its notebook
        notebook = await self.manager.notebook_of(body.kernel_id) if body.cell_id else None
        self.send(await jobs.submit(jobs.parse(body, data, notebook, self.caller)), 201)


class JobHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.own("job", job_id)
        self.send(self.manager.jobs.get(job_id))

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        self.own("job", job_id)
        self.send(await self.manager.jobs.delete(job_id, force=self.flag("force")))


class JobWaitHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.own("job", job_id)
        timeout = min(self.int_arg("timeout", 30), MAX_WAIT)
        self.send(await self.manager.jobs.wait(job_id, timeout))


class JobStopHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def post(self, job_id: str) -> None:
        self.own("job", job_id)
        self.send(await self.manager.jobs.stop(job_id))


class JobLogsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        self.own("job", job_id)
        logs = self.manager.jobs.logs(
            job_id, self.int_arg("task"), self.int_arg("offset"), self.flag("follow")
        )
        await self.stream(logs, "text/plain; charset=utf-8")
