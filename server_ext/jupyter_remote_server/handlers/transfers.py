"""File transfers through the server: tar streams proxied to and from agents, never buffered.

Uploads: tornado hands each body chunk to data_received, which waits for room in a small
queue that feeds the agent request's body producer (chunked), so a slow agent slows the
client and memory stays flat. Downloads: the agent's answer is read chunk by chunk on the
event loop (the server's agent client) and relayed as a chunked response.
"""

from __future__ import annotations

import asyncio
import json

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_remote.http.tornado_io import read_body_in
from jupyter_remote.protocol.errors import BadRequest, ConnectionFailed, NotFound, RemoteError
from jupyter_remote.protocol.tarstream import CHUNK
from jupyter_remote_server.agents.http import Answer
from jupyter_remote_server.handlers.base import RemoteHandler
from jupyter_remote_server.services.users import session_not_found

TAR = "application/x-tar"


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
    caller = handler.caller
    record = kernels.sessions.get(kernels.key(owner, image))
    if record is not None and not caller.sees(record):
        raise session_not_found(owner, image)  # another user's: as if there were none
    if record is not None:
        return record
    if create and manager.known_kernel(owner):
        return await kernels.ensure(owner, image, None, {}, "kernel", caller)
    raise session_not_found(owner, image)


async def pump_tar(handler: RemoteHandler, opening) -> None:
    """Relay the tar answer `opening` gives (a refusal before it is a JSON error)."""
    answer: Answer = await opening
    try:
        await handler.stream(answer, TAR)
    finally:
        answer.close()


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
        queue: asyncio.Queue = asyncio.Queue(8)
        self._queue = queue

        async def producer():
            while (chunk := await queue.get()) is not None:
                yield chunk

        length = self.request.headers.get("Content-Length")
        length = length if length and length.isdigit() else None
        sending = node.client.put_files(record["session_id"], path, producer(), length)
        self._fetch = asyncio.ensure_future(sending)

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
        try:
            resp: Answer = await self._fetch
        except ConnectionFailed as exc:
            raise ConnectionFailed(
                f"the node did not take the upload: {exc.message}", reason="node_unreachable"
            ) from None
        except RemoteError as exc:  # the node's refusal, relayed as it answered
            self.send(exc.to_json(), exc.status if exc.status < 500 else 502)
            return
        try:
            body = await resp.read()
        finally:
            resp.close()
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            answer = {"message": body[:500].decode(errors="replace"), "reason": "bad_answer"}
        self.send(answer, resp.status if resp.status < 500 else 502)

    @web.authenticated
    @authorized
    async def get(self, owner: str) -> None:
        path = _path_arg(self)
        record = await find_session(self, owner, create=False)
        node = self.manager.registry.answering(record["node_id"])
        sid = record["session_id"]
        await pump_tar(self, node.client.open_files(sid, path, f"node {node.node_id!r}"))

    def on_finish(self) -> None:
        self._restore_reads()
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()  # the client left mid-upload: the agent's request ends too


class JobOutputsHandler(RemoteHandler):
    """GET /remote/api/jobs/{id}/tasks/{n}/outputs?path=: a task's saved output, as tar."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str, index: str) -> None:
        self.own("job", job_id)
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
        what = f"node {node.node_id!r}"
        await pump_tar(self, node.client.open_job_outputs(task["agent_job_id"], 0, which, what))
