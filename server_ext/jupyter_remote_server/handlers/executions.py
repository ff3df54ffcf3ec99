"""Cells run through the server: start one (streamed), list, look at, reattach, cancel;
the latest of each cell of a notebook."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_remote.protocol.queries import ExecutionPageQuery, NotebookCellsQuery, page_query
from jupyter_remote.protocol.server_bodies import CancelBody, ServerExecutionBody
from jupyter_remote_server.handlers.base import RemoteHandler
from jupyter_remote_server.services.notebook_cells import notebook_cells


class ExecutionsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        query = page_query(ExecutionPageQuery, self.request.query_arguments)
        got = self.manager.executions.list(query, self.caller)
        self.send({"executions": got["items"], "next": got["next"]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        _, data = self.body(ServerExecutionBody, "max_execution_body")
        await self.stream_events(self.manager.executions.run(data, self.caller))


class ExecutionHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        self.own("execution", execution_id)
        self.send(self.manager.executions.get(execution_id))


class ExecutionEventsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self, execution_id: str) -> None:
        self.own("execution", execution_id)
        events = self.manager.executions.events(
            execution_id, self.int_arg("offset"), self.flag("follow")
        )
        await self.stream_events(events)


class ExecutionCancelHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def post(self, execution_id: str) -> None:
        self.own("execution", execution_id)
        body, _ = self.body(CancelBody)
        self.send(await self.manager.executions.cancel(execution_id, body.signal))


class NotebookCellsHandler(RemoteHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        query = page_query(NotebookCellsQuery, self.request.query_arguments)
        self.send(notebook_cells(self.manager, query.path, self.caller))
