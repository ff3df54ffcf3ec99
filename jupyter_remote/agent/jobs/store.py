"""Job records: one directory per job (job.json, each task's log and saved outputs), a
change feed with a version per save, tombstones of deleted ids, and retention's expiry."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator

from docker.errors import NotFound

from jupyter_remote.agent.jobs.plan import job_status
from jupyter_remote.agent.specs import check_id, safe_name
from jupyter_remote.agent.state import read_json, write_json
from jupyter_remote.agent.tenants import unknown
from jupyter_remote.protocol.common import TASK_FINAL
from jupyter_remote.protocol.errors import BadRequest, Conflict
from jupyter_remote.protocol.errors import NotFound as RemoteNotFound
from jupyter_remote.protocol.queries import PageQuery, page
from jupyter_remote.util.notify import Notifier


class JobStore:
    """This node's job records, in memory and on disk; what runs them is the JobManager."""

    def __init__(self, *, data_dir: str, node_id: str, api) -> None:
        self.root = os.path.abspath(os.path.join(data_dir, "jobs"))
        os.makedirs(self.root, exist_ok=True)
        # one small file per deleted job, kept for good: an id never runs twice
        self.deleted_root = os.path.abspath(os.path.join(data_dir, "jobs-deleted"))
        self.trash = os.path.abspath(os.path.join(data_dir, "jobs-trash"))
        os.makedirs(self.deleted_root, exist_ok=True)
        self.node_id = node_id
        self.api = api
        self.jobs: dict[str, dict] = {}
        self.epoch = os.urandom(6).hex()  # a new one per agent run: feed versions restart
        self.version = 0
        self.changes = Notifier()
        self._version_lock = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._create_lock = threading.Lock()
        self.ledger = None  # the Ledger of expired ids, set by the Agent

    # -- records -----------------------------------------------------------------------
    def path(self, job_id: str, *parts: str) -> str:
        return os.path.join(self.root, job_id, *parts)

    def save(self, job: dict) -> None:
        with self._version_lock:
            self.version += 1
            job["version"] = self.version
        write_json(self.path(job["job_id"], "job.json"), job)
        self.changes.notify()

    def changed_since(self, version: int, keep=lambda tenant: True) -> dict:
        """The change feed: jobs saved after `version`, so a watcher needs one request;
        only those whose tenant `keep` accepts (a tenant's own)."""
        jobs = [
            self.model(j)
            for j in list(self.jobs.values())
            if j.get("version", 0) > version and keep(j.get("tenant"))
        ]
        return {"epoch": self.epoch, "version": self.version, "jobs": jobs}

    def model(self, job: dict) -> dict:
        tasks = job["tasks"]
        done = sum(t["status"] in TASK_FINAL for t in tasks)
        return {
            **job,
            "status": job_status(job),
            "tasks_total": len(tasks),
            "tasks_done": done,
            "node_id": self.node_id,
            "tenant": job.get("tenant"),  # none in older records: the operator's
        }

    def get(self, job_id: str) -> dict:
        check_id(job_id, "job_id")
        try:
            return self.model(self.jobs[job_id])
        except KeyError:
            if self.ledger is not None:
                self.ledger.refuse("job", job_id, "job")
            gone = read_json(self._tombstone(job_id)) if self._deleted(job_id) else None
            if gone is None:
                raise unknown("job", job_id, self.node_id) from None
            raise RemoteNotFound(
                f"no job {job_id!r} on node {self.node_id!r} (it was deleted)",
                reason="job_not_found",
                **({"tenant": gone["tenant"]} if gone.get("tenant") is not None else {}),
            ) from None

    def _tombstone(self, job_id: str) -> str:
        return os.path.join(self.deleted_root, f"{job_id}.json")

    def _deleted(self, job_id: str) -> bool:
        return os.path.exists(self._tombstone(job_id))

    def list(self, query: PageQuery, keep=lambda tenant: True) -> dict:
        """One page of jobs, newest first by (created_at, id), and the next cursor; only
        those whose tenant `keep` accepts (a tenant's own)."""
        mine = [j for j in list(self.jobs.values()) if keep(j.get("tenant"))]
        got = page(mine, query, "created_at", "job_id")
        return {**got, "items": [self.model(j) for j in got["items"]]}

    def finished(self) -> list[tuple[str, float | None]]:
        """Every job with its end time; None while it is not final (retention's view)."""
        out = []
        for job_id, job in list(self.jobs.items()):
            final = job_status(job) in ("completed", "failed", "stopped") and all(
                t["status"] in TASK_FINAL for t in job["tasks"]
            )
            out.append((job_id, (job["finished_at"] or job["created_at"]) if final else None))
        return out

    def running_count(self) -> int:
        return sum(t["status"] == "running" for j in self.jobs.values() for t in j["tasks"])

    # -- deleting ----------------------------------------------------------------------
    def delete(self, job_id: str) -> dict:
        """Remove a finished job's record, logs and saved outputs (blocking).

        409 while a task runs or its container still exists; a tombstone keeps the id
        refused for re-submission (run once).
        """
        model = self.get(job_id)
        job = self.jobs[job_id]
        with self._locks[job_id]:
            status = job_status(job)
            busy = [t["index"] for t in job["tasks"] if t["status"] not in TASK_FINAL]
            if busy or status not in ("completed", "failed", "stopped"):
                raise Conflict(
                    f"job {job_id!r} is {status} on node {self.node_id!r}: stop it first",
                    reason="job_not_finished",
                    status=status,
                )
            for task in job["tasks"]:
                if self._container_exists(job, task):
                    raise Conflict(
                        f"job {job_id!r}: the container of task {task['index']} still "
                        "exists (being removed); try again",
                        reason="job_not_finished",
                        status=status,
                    )
            with self._create_lock:
                write_json(
                    self._tombstone(job_id),
                    {
                        "job_id": job_id,
                        "deleted_at": time.time(),
                        "status": status,
                        "tenant": job.get("tenant"),
                    },
                )
                gone = self._unlink(job_id)
        self._discarded(job_id, gone)
        return {**model, "deleted": True}

    def _unlink(self, job_id: str) -> str:
        """Move a job's files out of the way and forget it (call holding _create_lock)."""
        os.makedirs(self.trash, exist_ok=True)
        gone = os.path.join(self.trash, f"{job_id}-{os.urandom(4).hex()}")
        os.rename(self.path(job_id), gone)  # atomic: no half-deleted record is loaded
        self.jobs.pop(job_id, None)
        return gone

    def _discarded(self, job_id: str, gone: str) -> None:
        self._locks.pop(job_id, None)
        shutil.rmtree(gone, ignore_errors=True)
        with self._version_lock:
            self.version += 1
        self.changes.notify()

    def expire(self, job_ids: list[str]) -> int:
        """Retention: remove final jobs whose containers are gone, ids into the ledger first."""
        ending = dict(self.finished())
        records = {}
        for job_id in job_ids:
            job = self.jobs.get(job_id)
            if job is None or ending.get(job_id) is None:
                continue
            if any(self._container_exists(job, t) for t in job["tasks"]):
                continue
            records[job_id] = {
                "status": job_status(job),
                "started_at": job["created_at"],
                "finished_at": ending[job_id],
                "tenant": job.get("tenant"),
            }
        if not records:
            return 0
        self.ledger.add("job", records)
        for job_id in records:
            lock = self._locks.get(job_id)
            if lock is None:
                continue
            with lock, self._create_lock:
                gone = self._unlink(job_id)
            self._discarded(job_id, gone)
        return len(records)

    def _container_name(self, job: dict, task: dict) -> str:
        return f"jr-{safe_name(self.node_id)}-j-{safe_name(job['job_id'])}-{task['index']}"

    def _container_exists(self, job: dict, task: dict) -> bool:
        try:
            self.api.inspect_container(self._container_name(job, task))
        except NotFound:
            return False
        return True

    # -- logs --------------------------------------------------------------------------
    def log_path(self, job_id: str, task: int) -> str:
        job = self.jobs.get(job_id)
        if job is None:
            self.get(job_id)
        if not 0 <= task < len(job["tasks"]):
            raise BadRequest(
                f"job {job_id!r} has tasks 0..{len(job['tasks']) - 1}; no task {task}",
                reason="bad_task",
            )
        return self.path(job_id, f"task-{task}", "output.log")

    async def read_log(
        self, job_id: str, task: int, offset: int, follow: bool
    ) -> AsyncIterator[bytes]:
        """Raw output bytes from `offset`; with `follow`, until the task has ended."""
        path = self.log_path(job_id, task)
        state = self.jobs[job_id]["tasks"][task]
        with open(path, "rb") as fh:
            fh.seek(offset)
            while True:
                ended = state["status"] in TASK_FINAL
                chunk = fh.read(1 << 20)
                if chunk:
                    yield chunk
                    continue
                if ended or not follow:
                    return
                await asyncio.sleep(0.1)
