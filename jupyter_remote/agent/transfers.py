"""Files in and out of session containers: paths checked, uploads put the way `docker cp`
does, downloads as a stream of tar chunks.

Uploads are checked member by member as they arrive (each header before it is passed on)
and re-written with clean headers straight into the container (files.py: Docker's archive
API or the runner), under a hidden staging name beside the target (`.jr-upload-<id>`),
renamed into place by one `mv` in the container once the whole archive was good and
removed on a refusal: a refused archive leaves the container as it was. When the target
is an existing directory (Docker merges into it) or the image has no `mv`/`rm`, the
checked archive is spooled to the agent's disk and put once complete. Downloads stream
Docker's archive in 1 MiB pieces.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import uuid

from docker.errors import DockerException

from jupyter_remote.agent.containers import PROTOCOL_MOUNT, RUN_DIR, RUNNER_MOUNT
from jupyter_remote.agent.files import docker_error, files_of
from jupyter_remote.protocol.errors import BadRequest, NotFound
from jupyter_remote.protocol.tarstream import CHUNK, BadArchive, StreamCheck

MAX_PATH = 4096
RESERVED = (RUNNER_MOUNT, PROTOCOL_MOUNT, RUN_DIR)  # the runner's mounts: code, socket, spools


def container_path(raw: str | None, workdir: str | None) -> str:
    """An absolute, normal path in the container: `raw` as given or relative to workdir."""
    if not raw or len(raw) > MAX_PATH or "\0" in raw:
        raise BadRequest("path must be a non-empty container path", reason="bad_path")
    return posixpath.normpath(posixpath.join(workdir or "/", raw))


def writable_path(path: str) -> str:
    """An upload target: not inside the runner's own mounts (they are the host's
    directories; a cell's output spools live there)."""
    if any(path == top or path.startswith(top + "/") for top in RESERVED):
        raise BadRequest(
            f"{path} is the runner's own directory; put files elsewhere", reason="reserved_path"
        )
    return path


def download(api, session, path: str):
    """A session container's tar of `path` as a blocking iterator of chunks."""
    return files_of(api, session).chunks(path)


def upload(api, session, chunks, dest: str, spool_dir: str) -> dict:
    """Put the tar arriving as `chunks` (blocking) at `dest` in a session's container."""
    return put_stream(files_of(api, session), chunks, dest, spool_dir)


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
        raise docker_error(exc, dest) from None
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
