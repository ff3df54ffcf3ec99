"""Files in and out of session containers, and job task outputs kept past their containers.

Uploads are spooled to the agent's disk as they arrive (flat memory), checked member by
member (headers only), and only then re-written into Docker's archive API: a refused
archive never reaches the container. Downloads stream Docker's archive chunk by chunk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import posixpath
import tarfile
import tempfile
import threading

from docker.errors import DockerException
from docker.errors import NotFound as DockerNotFound
from tornado import web

from jupyter_remote.agent.handlers import AgentHandler
from jupyter_remote.errors import BadRequest, Conflict, NotFound
from jupyter_remote.tarstream import CHUNK, BadArchive, checked_members, rewrite

log = logging.getLogger("jupyter_remote.agent")
MAX_PATH = 4096
MAX_LISTED = 200


def container_path(raw: str | None, workdir: str | None) -> str:
    """An absolute, normal path in the container: `raw` as given or relative to workdir."""
    if not raw or len(raw) > MAX_PATH or "\0" in raw:
        raise BadRequest("path must be a non-empty container path", reason="bad_path")
    return posixpath.normpath(posixpath.join(workdir or "/", raw))


def path_stat(api, cid: str, path: str) -> dict | None:
    """Docker's stat of a container path (HEAD archive), None when it does not exist."""
    resp = api.head(api._url("/containers/{0}/archive", cid), params={"path": path})
    if resp.status_code == 404:
        return None
    api._raise_for_status(resp)
    raw = resp.headers.get("X-Docker-Container-Path-Stat")
    return json.loads(base64.b64decode(raw)) if raw else {}


def _docker_error(exc: DockerException, path: str):
    if isinstance(exc, DockerNotFound):
        return NotFound(
            f"no such path in the container: {path}", reason="path_not_found", path=path
        )
    why = getattr(exc, "explanation", None) or str(exc)
    return Conflict(f"the container refused {path}: {why}", reason="transfer_refused", path=path)


def put_spooled(api, cid: str, spool: str, dest: str) -> dict:
    """Check the spooled tar, then put it at `dest` the way `docker cp` does (blocking)."""
    try:
        members = checked_members(spool)
    except BadArchive as exc:
        raise BadRequest(f"refused, nothing written: {exc}", reason="bad_archive") from None
    try:
        st = path_stat(api, cid, dest)
        is_dir = st is not None and bool(st.get("mode", 0) & (1 << 31))
        into, rename = (
            (dest, None) if is_dir else (posixpath.dirname(dest), posixpath.basename(dest))
        )
        if rename == "":  # dest is "/"
            into, rename = "/", None
        if path_stat(api, cid, into) is None:
            raise NotFound(
                f"no such directory in the container: {into}", reason="path_not_found", path=into
            )
        api.put_archive(cid, into, rewrite(spool, members, rename))
    except DockerException as exc:
        raise _docker_error(exc, dest) from None
    size = sum(m.size for m in members if m.isreg())
    top = posixpath.join(into, rename or members[0].name.split("/")[0])
    return {"path": top, "files": sum(m.isreg() for m in members), "size": size}


def archive_chunks(api, cid: str, path: str):
    """Docker's tar of `path`, as a blocking chunk iterator (404 first if it is missing)."""
    try:
        stream, _stat = api.get_archive(cid, path, chunk_size=CHUNK)
    except DockerException as exc:
        raise _docker_error(exc, path) from None
    return coalesce(stream)


def coalesce(chunks, size: int = CHUNK):
    """Docker's small HTTP chunks joined into ~1 MiB pieces: one thread hop and one write
    each, instead of dozens."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def relay_blocking(handler: AgentHandler, chunks, depth: int = 8) -> None:
    """Send a blocking iterator's chunks, read ahead on a thread of its own (at most `depth`
    waiting), so reading the source and writing to the client overlap."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    slots = threading.Semaphore(depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for chunk in chunks:
                while not slots.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine side
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()

    async def agen():
        try:
            while True:
                item = await queue.get()
                slots.release()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    threading.Thread(target=read, daemon=True, name="transfer-read").start()
    await handler.stream(agen(), "application/x-tar")


@web.stream_request_body
class FilesHandler(AgentHandler):
    """GET/PUT /v1/sessions/{id}/files?path=: a tar of a path, or a tar put at a path."""

    def prepare(self) -> None:
        self._spool = None
        if self.request.method == "PUT":
            self._max_body = 1 << 62  # spooled to disk, never held in memory
            self.request.connection.set_max_body_size(1 << 62)
        super().prepare()
        if self.request.method == "PUT":
            spool_dir = os.path.join(self.agent.data_dir, "transfers")
            os.makedirs(spool_dir, exist_ok=True)
            self._spool = tempfile.NamedTemporaryFile(dir=spool_dir, suffix=".tar")  # noqa: SIM115

    def data_received(self, chunk: bytes) -> None:
        if self._spool is None:
            return super().data_received(chunk)
        self._spool.write(chunk)

    def on_finish(self) -> None:
        if getattr(self, "_spool", None) is not None:
            self._spool.close()

    def _where(self, sid: str) -> tuple[str, str]:
        session = self.agent.sessions.get(sid)
        raw = self.get_query_argument("path", None)
        return session.container_id, container_path(raw, session.spec.workdir)

    async def get(self, sid: str) -> None:
        cid, path = self._where(sid)
        chunks = await self.agent.blocking(archive_chunks, self.agent.factory.api, cid, path)
        await relay_blocking(self, chunks)

    async def put(self, sid: str) -> None:
        cid, path = self._where(sid)
        self._spool.flush()
        api = self.agent.factory.api
        self.send_json(await self.agent.blocking(put_spooled, api, cid, self._spool.name, path))


# -- job outputs -----------------------------------------------------------------------
def save_outputs(api, cid: str, task_dir: str, paths: list[str], workdir: str | None) -> list:
    """Copy each named output out of a finished task's container (blocking), before removal."""
    out_dir = os.path.join(task_dir, "outputs")
    os.makedirs(out_dir, exist_ok=True)
    saved = []
    for index, raw in enumerate(paths):
        path = posixpath.normpath(posixpath.join(workdir or "/", raw))
        entry = {"path": raw, "name": posixpath.basename(path) or "/", "saved": False}
        target = os.path.join(out_dir, f"{index}.tar")
        try:
            stream, _ = api.get_archive(cid, path, chunk_size=CHUNK)
            with open(target, "wb") as fh:
                for chunk in stream:
                    fh.write(chunk)
            with tarfile.open(target, "r:") as tar:
                files = [m for m in tar if m.isreg()]
            entry.update(
                saved=True,
                size=sum(m.size for m in files),
                files=len(files),
                entries=[{"name": m.name, "size": m.size} for m in files[:MAX_LISTED]],
            )
        except DockerNotFound:
            entry["message"] = f"no such path in the task's container: {path}"
        except (DockerException, OSError, tarfile.TarError) as exc:
            entry["message"] = f"could not save {path}: {exc}"
            log.warning("task output %s: %s", path, exc)
        saved.append(entry)
    return saved


def output_file(jobs, job_id: str, task: int, which: str | None) -> str:
    """The saved tar of one output of a task, chosen by path or name (or the only one)."""
    jobs.log_path(job_id, task)  # 404 for an unknown job, 400 for a bad task index
    outputs = jobs.jobs[job_id]["tasks"][task].get("outputs") or []
    if not outputs:
        raise NotFound(f"task {task} of job {job_id!r} has no saved outputs", reason="no_outputs")
    if which is None and len(outputs) == 1:
        index = 0
    else:
        matches = [i for i, o in enumerate(outputs) if which in (o["path"], o["name"])]
        if not matches:
            named = ", ".join(o["path"] for o in outputs)
            raise NotFound(
                f"task {task} of job {job_id!r} has no output {which!r} (it has {named})",
                reason="output_not_found",
            )
        index = matches[0]
    if not outputs[index]["saved"]:
        raise NotFound(outputs[index].get("message", "not saved"), reason="output_not_saved")
    return os.path.join(jobs._path(job_id, f"task-{task}"), "outputs", f"{index}.tar")


def read_chunks(path: str):
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


class JobOutputsHandler(AgentHandler):
    """GET /v1/jobs/{id}/outputs?task=N&path=P: a saved output as a tar stream."""

    async def get(self, job_id: str) -> None:
        path = output_file(
            self.agent.jobs, job_id, self.int_arg("task"), self.get_query_argument("path", None)
        )
        await relay_blocking(self, read_chunks(path))


ROUTES = [
    (r"/v1/sessions/([^/]+)/files", FilesHandler),
    (r"/v1/jobs/([^/]+)/outputs", JobOutputsHandler),
]
