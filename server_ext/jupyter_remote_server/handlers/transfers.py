"""File transfers through the server: tar streams proxied to and from agents, never buffered.

Uploads: tornado hands each body chunk to data_received, which waits for room in a small
queue that feeds the agent request's body producer (chunked), so a slow agent slows the
client and memory stays flat. Downloads: the agent's answer is read on a worker thread
(ThreadPump, bounded queue) and relayed as a chunked response.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jupyter_remote.http.relay import read_body_in
from jupyter_remote.protocol.errors import BadRequest, ConnectionFailed, NotFound, RemoteError
from jupyter_remote.protocol.tarstream import CHUNK
from jupyter_remote_server.agents.pump import ThreadPump
from jupyter_remote_server.handlers.base import RemoteHandler

TAR = "application/x-tar"
UPLOAD_TIMEOUT = 24 * 3600.0


def _path_arg(handler: RemoteHandler) -> str:
    path = handler.get_query_argument("path", "")
    if not path or len(path) > 4096 or "\0" in path:
        raise BadRequest("path must be a non-empty container path", reason="bad_path")
    return path


async def find_session(handler: RemoteHandler, owner: str, create: bool) -> dict:
    """The owner's (kernel's or client's) session for ?image=; a kernel's is made on upload."""
    manager = handler.manager
    image = handler.get_query_argument("image", "") or manager.executions.default_image
    kernels = manager.kernels
    record = kernels.sessions.get(kernels.key(owner, image))
    if record is not None:
        return record
    if create and manager.known_kernel(owner):
        return await manager.blocking(lambda: kernels.ensure(owner, image, None, {}, "kernel"))
    raise NotFound(
        f"no {image} session for {owner!r}: run a cell (or create the session) first",
        reason="session_not_found",
    )


async def pump_tar(handler: RemoteHandler, open_response, what: str) -> None:
    pump = ThreadPump(open_response, what, handler.manager.executions.stream_executor)
    try:
        await handler.stream(pump.start(), TAR)
    finally:
        pump.close()


@web.stream_request_body
class SessionFilesHandler(RemoteHandler):
    """GET/PUT /remote/api/sessions/{owner}/files?path=&image=: tar out of or into it."""

    async def prepare(self) -> None:
        self._queue: asyncio.Queue | None = None
        self._fetch: asyncio.Future | None = None
        self._restore_reads = lambda: None
        await super().prepare()
        if self.request.method != "PUT":
            return
        if not self.current_user:
            raise web.HTTPError(403)
        self._restore_reads = read_body_in(self, CHUNK)
        owner = self.path_args[0]
        try:
            path = _path_arg(self)
            record = await find_session(self, owner, create=True)
            node = self.manager.registry.answering(record["node_id"])
        except RemoteError as exc:
            self._refused = exc  # answered in put(); the body is read and dropped
            return
        client = node.client
        query = urlencode({"path": path})
        queue: asyncio.Queue = asyncio.Queue(8)
        self._queue = queue

        async def producer(write) -> None:
            while (chunk := await queue.get()) is not None:
                await write(chunk)

        headers = {k: v for k, v in client.http.headers.items() if k == "Authorization"}
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit():  # passed on as it came: no chunked framing
            headers["Content-Length"] = length
        request = HTTPRequest(
            f"{client.url}/v1/sessions/{record['session_id']}/files?{query}",
            method="PUT",
            headers=headers,
            body_producer=producer,
            connect_timeout=client.connect_timeout,
            request_timeout=UPLOAD_TIMEOUT,
        )
        self._fetch = asyncio.ensure_future(AsyncHTTPClient().fetch(request, raise_error=False))

    async def _feed(self, chunk: bytes | None) -> None:
        if self._queue is None or self._fetch.done():
            return  # refused already: the rest of the body is dropped
        if not self._queue.full():
            self._queue.put_nowait(chunk)
            return
        put = asyncio.ensure_future(self._queue.put(chunk))
        await asyncio.wait({put, self._fetch}, return_when=asyncio.FIRST_COMPLETED)
        put.cancel()

    async def data_received(self, chunk: bytes) -> None:
        await self._feed(chunk)

    @web.authenticated
    @authorized
    async def put(self, owner: str) -> None:
        if getattr(self, "_refused", None) is not None:
            raise self._refused
        await self._feed(None)
        resp = await self._fetch
        if resp.code == 599:
            raise ConnectionFailed(
                f"the node did not take the upload: {resp.error}", reason="node_unreachable"
            )
        try:
            answer = json.loads(resp.body or b"{}")
        except ValueError:
            answer = {"message": resp.body[:500].decode(errors="replace"), "reason": "bad_answer"}
        self.send(answer, resp.code if resp.code < 500 else 502)

    @web.authenticated
    @authorized
    async def get(self, owner: str) -> None:
        path = _path_arg(self)
        record = await find_session(self, owner, create=False)
        node = self.manager.registry.answering(record["node_id"])
        sid = record["session_id"]
        await pump_tar(self, lambda: node.client.open_files(sid, path), f"node {node.node_id!r}")

    def on_finish(self) -> None:
        self._restore_reads()
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()  # the client left mid-upload: the agent's request ends too


class JobOutputsHandler(RemoteHandler):
    """GET /remote/api/jobs/{id}/tasks/{n}/outputs?path=: a task's saved output, as tar."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str, index: str) -> None:
        job = self.manager.jobs.get(job_id)
        if not index.isdigit() or int(index) >= len(job["tasks"]):
            raise BadRequest(
                f"job {job_id!r} has tasks 0..{len(job['tasks']) - 1}", reason="bad_task"
            )
        task = job["tasks"][int(index)]
        if not task["agent_job_id"]:
            raise NotFound(f"task {index} of job {job_id!r} never started", reason="no_outputs")
        node = self.manager.registry.answering(task["node_id"], f", which ran task {index}")
        which = self.get_query_argument("path", None)
        await pump_tar(
            self,
            lambda: node.client.open_job_outputs(task["agent_job_id"], 0, which),
            f"node {node.node_id!r}",
        )
