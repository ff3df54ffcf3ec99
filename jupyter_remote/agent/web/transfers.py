"""Files in and out of session containers, and job task outputs kept past their containers.

Uploads are checked member by member as they arrive (each header before it is passed on)
and re-written with clean headers straight into Docker's archive API, under a hidden
staging name beside the target (`.jr-upload-<id>`), renamed into place by one `mv` in the
container once the whole archive was good and removed on a refusal: a refused archive
leaves the container as it was. When the target is an existing directory (Docker merges
into it) or the image has no `mv`/`rm`, the checked archive is spooled to the agent's
disk and put once complete. Downloads stream Docker's archive in 1 MiB pieces.

The archive API is spoken on connections of the agent's own (put_archive,
archive_chunks), not through docker-py's: per byte that is where the agent's time went
(see docs/performance.md, "File transfers").
"""

from __future__ import annotations

import asyncio
import base64
import collections
import http.client
import json
import logging
import os
import posixpath
import tarfile
import tempfile
import threading
import time
import uuid
from http.client import HTTPException
from urllib.parse import urlencode, urlsplit

import requests
from docker.errors import DockerException
from docker.errors import NotFound as DockerNotFound
from tornado import web
from urllib3.exceptions import HTTPError as Urllib3Error

from jupyter_remote.agent.containers import PROTOCOL_MOUNT, RUN_DIR, RUNNER_MOUNT
from jupyter_remote.agent.web.handlers import AgentHandler
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound
from jupyter_remote.http.relay import read_body_in
from jupyter_remote.agent.runner_client import RunnerClient, RunnerError, RunnerRefused, RunnerUnavailable
from jupyter_remote.protocol.tarstream import CHUNK, BadArchive, StreamCheck

log = logging.getLogger("jupyter_remote.agent")
MAX_PATH = 4096
MAX_LISTED = 200


def container_path(raw: str | None, workdir: str | None) -> str:
    """An absolute, normal path in the container: `raw` as given or relative to workdir."""
    if not raw or len(raw) > MAX_PATH or "\0" in raw:
        raise BadRequest("path must be a non-empty container path", reason="bad_path")
    return posixpath.normpath(posixpath.join(workdir or "/", raw))


RESERVED = (RUNNER_MOUNT, PROTOCOL_MOUNT, RUN_DIR)  # the runner's mounts: code, socket, spools


def writable_path(path: str) -> str:
    """An upload target: not inside the runner's own mounts (they are the host's
    directories; a cell's output spools live there)."""
    if any(path == top or path.startswith(top + "/") for top in RESERVED):
        raise BadRequest(
            f"{path} is the runner's own directory; put files elsewhere", reason="reserved_path"
        )
    return path


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


def _exec(api, cid: str, argv: list[str]) -> int:
    """Run `argv` as root in the container (blocking); its exit code (126/127: not found)."""
    exec_id = api.exec_create(cid, argv, user="0", stdout=True, stderr=True)["Id"]
    api.exec_start(exec_id)
    return api.exec_inspect(exec_id).get("ExitCode") or 0


_CAN_STAGE: dict[str, bool] = {}


def can_stage(api, cid: str) -> bool:
    """Whether the container has `mv` and `rm` (probed once per container)."""
    if cid not in _CAN_STAGE:
        if len(_CAN_STAGE) > 1000:
            _CAN_STAGE.clear()
        try:
            ok = all(_exec(api, cid, [t, "--help"]) not in (126, 127) for t in ("mv", "rm"))
        except DockerException:
            ok = False
        _CAN_STAGE[cid] = ok
    return _CAN_STAGE[cid]


def _is_dir(st: dict | None) -> bool:
    return st is not None and st["dir"]


def put_stream(files, chunks, dest: str, spool_dir: str) -> dict:
    """Check the incoming tar (a blocking chunk iterator) as it passes and put it at `dest`
    the way `docker cp` does: through a staging name renamed into place, or spooled.
    `files` is the container's DockerFiles or RunnerFiles."""
    try:
        check = StreamCheck(chunks)
        first = check.peek()
    except BadArchive as exc:
        raise BadRequest(f"refused, nothing written: {exc}", reason="bad_archive") from None
    try:
        st = files.stat(dest)
        into, rename = (
            (dest, None) if _is_dir(st) else (posixpath.dirname(dest), posixpath.basename(dest))
        )
        if rename == "":  # dest is "/"
            into, rename = "/", None
        if files.stat(into) is None:
            raise NotFound(
                f"no such directory in the container: {into}", reason="path_not_found", path=into
            )
        name = rename or first.name.split("/")[0]
        top = posixpath.join(into, name)
        there = files.stat(top)
        # a directory already there is merged into (Docker's way), and a directory never
        # replaces a file by a rename: those are spooled, like an image without mv/rm
        staged = (there is None or not (_is_dir(there) or first.isdir())) and files.can_stage()
        if staged:
            _put_staged(files, check, into, top)
        else:
            _put_spooled(files, check, into, name, spool_dir)
    except BadArchive as exc:
        raise BadRequest(f"refused, nothing written: {exc}", reason="bad_archive") from None
    except DockerException as exc:
        raise _docker_error(exc, dest) from None
    return {"path": top, "files": check.files, "size": check.size}


def _put_staged(files, check: StreamCheck, into: str, top: str) -> None:
    stage = posixpath.join(into, f".jr-upload-{uuid.uuid4().hex[:12]}")
    try:
        files.put(into, files.encode(check, posixpath.basename(stage)))
        files.move(stage, top)
    except BaseException:
        files.remove(stage)
        raise


def _put_spooled(files, check: StreamCheck, into: str, name: str, spool_dir: str):
    os.makedirs(spool_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=spool_dir, suffix=".tar") as spool:
        for piece in files.encode(check, name):
            spool.write(piece)
        spool.seek(0)
        files.put(into, iter(lambda: spool.read(CHUNK), b""))


def _remove(api, cid: str, path: str) -> None:
    """Remove a staging path; Docker may still be finishing an aborted put, so check."""
    for _ in range(20):
        try:
            _exec(api, cid, ["rm", "-rf", path])
            if path_stat(api, cid, path) is None:
                return
        except DockerException as exc:
            log.warning("could not remove %s in %s: %s", path, cid[:12], exc)
            return
        time.sleep(0.1)
    log.warning("could not remove %s in %s", path, cid[:12])


class DockerFiles:
    """A container's files through Docker's archive API (any image; dockerd tars)."""

    def __init__(self, api, cid: str) -> None:
        self.api, self.cid = api, cid

    def stat(self, path: str) -> dict | None:
        st = path_stat(self.api, self.cid, path)
        return None if st is None else {"dir": bool(st.get("mode", 0) & (1 << 31))}

    def can_stage(self) -> bool:
        return can_stage(self.api, self.cid)

    @staticmethod
    def encode(check: StreamCheck, top: str):
        return check.rewritten(top)

    def put(self, into: str, pieces) -> None:
        put_archive(self.api, self.cid, into, pieces)

    def move(self, src: str, dst: str) -> None:
        code = _exec(self.api, self.cid, ["mv", "-f", src, dst])
        if code:
            raise Conflict(
                f"the container refused {dst}: mv exited with {code}",
                reason="transfer_refused",
                path=dst,
            )

    def remove(self, path: str) -> None:
        _remove(self.api, self.cid, path)

    def chunks(self, path: str):
        return archive_chunks(self.api, self.cid, path)


class RunnerFiles:
    """A container's files through its runner (docs/runner.md, "Files"): the runner writes
    and reads them itself, so dockerd tars nothing (its CPU was most of a transfer's)."""

    def __init__(self, runner: RunnerClient) -> None:
        self.runner = runner

    def _call(self, what: str, path: str, fn, *args):
        try:
            return fn(*args)
        except RunnerRefused as exc:
            if exc.reason == "path_not_found":
                raise NotFound(exc.message, reason="path_not_found", path=path) from None
            raise Conflict(
                f"the container refused {path}: {exc.message}", reason="transfer_refused", path=path
            ) from None
        except RunnerUnavailable as exc:
            raise Conflict(
                f"the container's runner could not {what} {path}: {exc}",
                reason="transfer_refused",
                path=path,
            ) from None

    def stat(self, path: str) -> dict | None:
        st = self._call("look at", path, self.runner.stat, path)
        return {"dir": st["dir"]} if st["exists"] else None

    @staticmethod
    def can_stage() -> bool:
        return True

    @staticmethod
    def encode(check: StreamCheck, top: str):
        return check.framed(top)

    def put(self, into: str, pieces) -> None:
        self._call("write to", into, self.runner.put, into, pieces)

    def move(self, src: str, dst: str) -> None:
        self._call("move", dst, self.runner.rename, src, dst)

    def remove(self, path: str) -> None:
        """Remove a refused upload's staging path (the runner has stopped writing it: put
        returns only after its answer)."""
        try:
            self.runner.remove(path)
        except RunnerError as exc:
            log.warning("could not remove %s: %s", path, exc)

    def chunks(self, path: str):
        return self._call("read", path, self.runner.get, path)


_RUNNER_FILES: dict[str, bool] = {}


def files_of(api, session) -> DockerFiles | RunnerFiles:
    """The runner for a runner session whose runner does files (version 2 on), else Docker."""
    runner = session.runner
    if runner is not None:
        known = _RUNNER_FILES.get(session.runner_dir)
        if known is None:
            try:
                known = int(runner.status(timeout=5.0).get("version", 1)) >= 2
            except (RunnerError, ValueError):
                known = False
            if len(_RUNNER_FILES) > 1000:
                _RUNNER_FILES.clear()
            _RUNNER_FILES[session.runner_dir] = known
        if known:
            return RunnerFiles(runner)
    return DockerFiles(api, session.container_id)


class Channel:
    """Chunks from the IOLoop to a thread: at most `depth` waiting (the sender awaits room),
    so a slow container slows the client and memory stays flat."""

    END = object()
    GONE = object()

    def __init__(self, depth: int = 8) -> None:
        self.loop = asyncio.get_running_loop()
        self.depth = depth
        self.queue: collections.deque = collections.deque()
        self.cv = threading.Condition()
        self.room: asyncio.Future | None = None
        self.dead = False

    async def put(self, item) -> None:
        while True:
            with self.cv:
                if self.dead:
                    return
                if len(self.queue) < self.depth or item is self.END or item is self.GONE:
                    self.queue.append(item)
                    self.cv.notify()
                    return
                self.room = self.loop.create_future()
                room = self.room
            await room

    def _wake(self) -> None:
        room, self.room = self.room, None
        if room is not None:
            self.loop.call_soon_threadsafe(lambda: room.done() or room.set_result(None))

    def close(self) -> None:
        """The reader is done: later chunks are dropped."""
        with self.cv:
            self.dead = True
            self.queue.clear()
            self._wake()

    def __iter__(self):
        while True:
            with self.cv:
                while not self.queue:
                    self.cv.wait()
                item = self.queue.popleft()
                self._wake()
            if item is self.END:
                return
            if item is self.GONE:
                raise BadArchive("the client left before the archive ended")
            yield item


def _archive_conn(api, cid: str, path: str):
    """A connection of its own to the Docker engine (unix socket, TCP or TLS, as the client
    is set up), and the container's archive endpoint for `path`."""
    url = api._url("/containers/{0}/archive", cid)
    adapter = api.get_adapter(url)
    if hasattr(adapter, "get_connection_with_tls_context"):
        pool = adapter.get_connection_with_tls_context(
            requests.Request("GET", url).prepare(), verify=api.verify
        )
    else:  # requests < 2.32
        pool = adapter.get_connection(url)
    return pool._new_conn(), f"{urlsplit(url).path}?{urlencode({'path': path})}"


def put_archive(api, cid: str, into: str, pieces) -> None:
    """PUT a tar into the container at `into`, chunked: each piece goes to the socket as it
    is, after its size line (urllib3, under docker-py, copies every piece into new framed
    bytes: a fifth of the agent's time on an upload). An error from `pieces` drops the
    connection, so Docker sees a cut body and extracts no further."""
    conn, target = _archive_conn(api, cid, into)
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/x-tar")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        sock, gap = conn.sock, b""
        for piece in pieces:
            if piece:
                sock.sendall(b"%s%x\r\n" % (gap, len(piece)))
                sock.sendall(piece)
                gap = b"\r\n"
        sock.sendall(gap + b"0\r\n\r\n")
        resp = http.client.HTTPConnection.getresponse(conn)  # as in archive_chunks
        if resp.status != 200:
            raise _answer_error(resp.status, resp.read(1 << 16), into)
    except (OSError, HTTPException, Urllib3Error) as exc:
        raise Conflict(
            f"Docker did not take the archive at {into}: {exc}",
            reason="transfer_refused",
            path=into,
        ) from None
    finally:
        conn.close()


def archive_chunks(api, cid: str, path: str):
    """Docker's tar of `path`, as a blocking iterator of 1 MiB chunks (404 first if it is
    missing). Asked over HTTP/1.0, the daemon sends the tar unframed and ends by closing:
    over HTTP/1.1 it comes in alternating 2 KiB and 14 KiB chunks, and taking ~130,000 of
    them apart per GB in Python cost the agent more CPU than all its other work."""
    conn, target = _archive_conn(api, cid, path)
    conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    try:
        # http.client's own calls: the same on urllib3 1.26 and 2.x connections
        http.client.HTTPConnection.request(conn, "GET", target, headers={"Host": "docker"})
        resp = http.client.HTTPConnection.getresponse(conn)
        if resp.status != 200:
            raise _answer_error(resp.status, resp.read(1 << 16), path)
    except (OSError, HTTPException, Urllib3Error) as exc:
        conn.close()
        raise Conflict(
            f"Docker did not answer for {path}: {exc}", reason="transfer_refused", path=path
        ) from None
    except BaseException:
        conn.close()
        raise
    return _unframed(resp, conn, path)


def _answer_error(status: int, body: bytes, path: str):
    try:
        why = json.loads(body).get("message") or body.decode(errors="replace")
    except (ValueError, AttributeError):
        why = body[:500].decode(errors="replace")
    if status == 404:
        return NotFound(
            f"no such path in the container: {path}", reason="path_not_found", path=path
        )
    return Conflict(f"the container refused {path}: {why}", reason="transfer_refused", path=path)


def _unframed(resp, conn, path: str):
    """The body in 1 MiB reads; an unframed body ends at a close, so a daemon that died
    mid-way is told apart by the tar's end (two zero blocks) missing."""
    tail = b""
    try:
        while chunk := resp.read(CHUNK):
            tail = (tail + chunk[-_TAR_END:])[-_TAR_END:]
            yield chunk
    except (OSError, HTTPException, Urllib3Error) as exc:
        raise BadArchive(f"Docker's archive of {path} broke off: {exc}") from None
    finally:
        conn.close()
    if tail != bytes(_TAR_END):
        raise BadArchive(f"Docker's archive of {path} ended before the tar did")


_TAR_END = 2 * tarfile.BLOCKSIZE


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
            self._channel = channel = Channel()
            api = self.agent.factory.api
            spool_dir = os.path.join(self.agent.data_dir, "transfers")
            work = channel.loop.create_future()
            self._work = work
            work.add_done_callback(lambda f: f.cancelled() or f.exception())

            def run() -> None:
                try:
                    result = put_stream(files_of(api, session), channel, path, spool_dir)
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

    def on_connection_close(self) -> None:
        if getattr(self, "_channel", None) is not None:
            asyncio.ensure_future(self._channel.put(Channel.GONE))
        super().on_connection_close()

    def _where(self, sid: str) -> tuple:
        session = self.agent.sessions.get(sid)
        raw = self.get_query_argument("path", None)
        return session, container_path(raw, session.spec.workdir)

    async def get(self, sid: str) -> None:
        session, path = self._where(sid)
        api = self.agent.factory.api
        chunks = await self.agent.blocking(lambda: files_of(api, session).chunks(path))
        await relay_blocking(self, chunks)

    async def put(self, sid: str) -> None:
        if self._refused is not None:
            raise self._refused
        if self._pending:
            await self._channel.put(bytes(self._pending))
        await self._channel.put(Channel.END)
        self.send_json(await self._work)


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
