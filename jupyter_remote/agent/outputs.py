"""Job task outputs: copied out of a finished task's container before it is removed, kept
as tars beside the task's log, and found again by path or name for a download."""

from __future__ import annotations

import logging
import os
import posixpath
import tarfile

from docker.errors import DockerException
from docker.errors import NotFound as DockerNotFound

from jupyter_remote.protocol.errors import NotFound
from jupyter_remote.protocol.tarstream import CHUNK

log = logging.getLogger("jupyter_remote.agent")
MAX_LISTED = 200


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
    return os.path.join(jobs.path(job_id, f"task-{task}"), "outputs", f"{index}.tar")


def read_chunks(path: str):
    """A file as a blocking iterator of 1 MiB chunks."""
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
