"""File endpoints: a session container's files as a tar (GET) or a tar put there (PUT,
streamed through, never held in memory), and a job task's saved outputs."""

from __future__ import annotations

import asyncio
import os
import threading

from tornado import web

from jupyter_remote.agent.outputs import output_file, read_chunks
from jupyter_remote.agent.transfers import container_path, download, upload, writable_path
from jupyter_remote.agent.web.base import AgentHandler
from jupyter_remote.agent.web.bridge import Channel, read_ahead
from jupyter_remote.http.tornado_io import read_body_in
from jupyter_remote.protocol.errors import BadRequest, NotFound
from jupyter_remote.protocol.tarstream import CHUNK

TAR = "application/x-tar"


@web.stream_request_body
class FilesHandler(AgentHandler):
    """GET/PUT /v1/sessions/{id}/files?path=: a tar of a path, or a tar put at a path."""

    def prepare(self) -> None:
        self._channel = self._work = self._refused = None
        self._pending = bytearray()
        self._restore_reads = lambda: None
        if self.request.method == "PUT":
            self._max_body = 1 << 62  # streamed through, never held in memory
            self._restore_reads = read_body_in(self, CHUNK)
        super().prepare()
        if self.request.method == "PUT":
            try:
                session, path = self._where(self.path_args[0])
                writable_path(path)
            except (BadRequest, NotFound) as exc:
                self._refused = exc  # answered in put(); the body is read and dropped
                return
            self._start_put(session, path)

    def _start_put(self, session, path: str) -> None:
        """The thread that checks and puts the archive as its chunks arrive."""
        self._channel = channel = Channel()
        api = self.agent.factory.api
        spool_dir = os.path.join(self.agent.data_dir, "transfers")
        work = channel.loop.create_future()
        self._work = work
        work.add_done_callback(lambda f: f.cancelled() or f.exception())

        def run() -> None:
            try:
                result = upload(api, session, channel, path, spool_dir)
            except BaseException as exc:  # noqa: BLE001 - handed to put()
                outcome = (work.set_exception, exc)
            else:
                outcome = (work.set_result, result)
            finally:
                channel.close()
            channel.loop.call_soon_threadsafe(lambda: work.done() or outcome[0](outcome[1]))

        threading.Thread(target=run, daemon=True, name="transfer-put").start()

    async def data_received(self, chunk: bytes) -> None:
        if self.request.method != "PUT":
            return super().data_received(chunk)
        if self._channel is None:
            return
        if not self._pending and len(chunk) >= CHUNK // 2:
            await self._channel.put(chunk)  # tornado reads ~1 MiB: passed on as it came
            return
        self._pending += chunk  # small pieces joined: one hand-off and send per ~1 MiB
        if len(self._pending) >= CHUNK // 2:
            piece, self._pending = bytes(self._pending), bytearray()
            await self._channel.put(piece)

    def on_finish(self) -> None:
        self._restore_reads()
        super().on_finish()

    def on_connection_close(self) -> None:
        if getattr(self, "_channel", None) is not None:
            asyncio.ensure_future(self._channel.put(Channel.GONE))
        super().on_connection_close()

    def _where(self, sid: str) -> tuple:
        session = self.own("session", sid)
        raw = self.get_query_argument("path", None)
        return session, container_path(raw, session.spec.workdir)

    async def get(self, sid: str) -> None:
        session, path = self._where(sid)
        api = self.agent.factory.api
        chunks = await self.agent.blocking(download, api, session, path)
        await self.stream(read_ahead(chunks), TAR)

    async def put(self, sid: str) -> None:
        if self._refused is not None:
            raise self._refused
        if self._pending:
            await self._channel.put(bytes(self._pending))
        await self._channel.put(Channel.END)
        self.send(await self._work)


class JobOutputsHandler(AgentHandler):
    """GET /v1/jobs/{id}/outputs?task=N&path=P: a saved output as a tar stream."""

    async def get(self, job_id: str) -> None:
        self.own("job", job_id)
        path = output_file(
            self.agent.jobs, job_id, self.int_arg("task"), self.get_query_argument("path", None)
        )
        await self.stream(read_ahead(read_chunks(path)), TAR)
