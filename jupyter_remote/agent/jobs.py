"""Detached jobs: tasks in containers of their own that outlive the agent's process.

Each task's container writes its output straight into a log file on the agent's disk
(a bind mount), and keeps its exit code until the agent has recorded it; so an agent that
was killed finds its tasks again by name and label and reports real exit codes and logs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator

from docker.errors import DockerException, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from jupyter_remote.agent.containers import ContainerFactory
from jupyter_remote.agent.specs import (
    ContainerSpec,
    Limits,
    argv_of,
    check_id,
    container_spec,
    safe_name,
)
from jupyter_remote.agent.state import read_json, write_json
from jupyter_remote.protocol.errors import BadRequest, Conflict
from jupyter_remote.protocol.errors import NotFound as RemoteNotFound
from jupyter_remote.util.notify import Notifier
from jupyter_remote.protocol.bodies import JobBody, TaskBody
from jupyter_remote.protocol.queries import PageQuery, page
from jupyter_remote.protocol.validation import parse_body

log = logging.getLogger("jupyter_remote.agent")

TASK_FINAL = ("completed", "failed", "timed_out", "stopped", "lost")
LOG_MOUNT = "/.jupyter-remote"
TASK_DEFAULTS = (
    "image",
    "memory",
    "cpus",
    "pids_limit",
    "env",
    "workdir",
    "network",
    "timeout",
    "outputs",
)
COMMAND_FIELDS = ("command", "python", "argv", "interpreter")
# The command's stdout and stderr go to the bind-mounted log file, not through the agent.
WRAPPER = ["sh", "-c", f'exec "$@" >>{LOG_MOUNT}/output.log 2>&1', "jupyter-remote-task"]


def job_status(job: dict) -> str:
    """One word for the whole job, derived from its tasks."""
    states = [t["status"] for t in job["tasks"]]
    if any(s == "running" for s in states):
        return "running"
    if any(s == "pending" for s in states) and not job["stop_requested"]:
        return "pending" if all(s == "pending" for s in states) else "running"
    if job["stop_requested"]:
        return "stopped"
    return "completed" if all(s == "completed" for s in states) else "failed"


class JobManager:
    """Starts, watches, stops and recovers this node's jobs."""

    def __init__(
        self,
        *,
        data_dir: str,
        node_id: str,
        factory: ContainerFactory,
        limits: Limits,
        default_image: str,
        stop_grace: float,
    ) -> None:
        self.root = os.path.abspath(os.path.join(data_dir, "jobs"))
        os.makedirs(self.root, exist_ok=True)
        # one small file per deleted job, kept for good: an id never runs twice
        self.deleted_root = os.path.abspath(os.path.join(data_dir, "jobs-deleted"))
        self.trash = os.path.abspath(os.path.join(data_dir, "jobs-trash"))
        os.makedirs(self.deleted_root, exist_ok=True)
        self.node_id = node_id
        self.factory = factory
        self.api = factory.api
        self.limits = limits
        self.default_image = default_image
        self.stop_grace = stop_grace
        self._stop_seconds = max(1, math.ceil(stop_grace))  # Docker takes whole seconds
        self.jobs: dict[str, dict] = {}
        self.epoch = os.urandom(6).hex()  # a new one per agent run: feed versions restart
        self.version = 0
        self.changes = Notifier()
        self._version_lock = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._create_lock = threading.Lock()
        self.ledger = None  # the Ledger of expired ids, set by the Agent

    # -- records -----------------------------------------------------------------------
    def _path(self, job_id: str, *parts: str) -> str:
        return os.path.join(self.root, job_id, *parts)

    def _save(self, job: dict) -> None:
        with self._version_lock:
            self.version += 1
            job["version"] = self.version
        write_json(self._path(job["job_id"], "job.json"), job)
        self.changes.notify()

    def changed_since(self, version: int) -> dict:
        """The change feed: jobs saved after `version`, so a watcher needs one request."""
        jobs = [self.model(j) for j in list(self.jobs.values()) if j.get("version", 0) > version]
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
        }

    def get(self, job_id: str) -> dict:
        check_id(job_id, "job_id")
        try:
            return self.model(self.jobs[job_id])
        except KeyError:
            if self.ledger is not None:
                self.ledger.refuse("job", job_id, "job")
            was = " (it was deleted)" if self._deleted(job_id) else ""
            raise RemoteNotFound(
                f"no job {job_id!r} on node {self.node_id!r}{was}", reason="job_not_found"
            ) from None

    def _tombstone(self, job_id: str) -> str:
        return os.path.join(self.deleted_root, f"{job_id}.json")

    def _deleted(self, job_id: str) -> bool:
        return os.path.exists(self._tombstone(job_id))

    def list(self, query: PageQuery) -> dict:
        """One page of jobs, newest first by (created_at, id), and the next cursor."""
        got = page(list(self.jobs.values()), query, "created_at", "job_id")
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

    # -- submitting --------------------------------------------------------------------
    def parse(self, body: JobBody) -> dict:
        """A complete job record from a typed request, checked before anything starts."""
        job_id = body.job_id or f"j-{os.urandom(6).hex()}"
        privileges = {"user", "read_only", "cap_add"}  # defaults for each task too
        defaults = body.model_dump(include={*TASK_DEFAULTS, *privileges}, exclude_none=True)
        raw_tasks = body.tasks
        if raw_tasks is None:
            raw_tasks = [body.model_dump(include=set(COMMAND_FIELDS), exclude_none=True)]
        tasks = []
        for index, raw in enumerate(raw_tasks):
            task = parse_body(TaskBody, {**defaults, **raw}, where=f"task {index}")
            try:
                spec = container_spec(task, self.limits, self.default_image)
            except BadRequest as exc:
                raise BadRequest(f"task {index}: {exc.message}", reason=exc.reason) from None
            tasks.append(
                {
                    "index": index,
                    "name": task.name or f"task-{index}",
                    "argv": argv_of(task),
                    "timeout": task.timeout,
                    "spec": {**spec.to_json(), "env": spec.env},
                    "status": "pending",
                    "returncode": None,
                    "container_id": None,
                    "started_at": None,
                    "finished_at": None,
                    "oom_killed": False,
                    "message": None,
                    **({"output_paths": task.outputs} if task.outputs else {}),
                }
            )
        return {
            "job_id": job_id,
            "name": body.name or job_id,
            "created_at": time.time(),
            "finished_at": None,
            "stop_requested": False,
            "parallelism": body.parallelism,
            "tasks": tasks,
        }

    def submit(self, job: dict) -> dict:
        """Record the job and start its first tasks (blocking: call off the event loop)."""
        for image in {t["spec"]["image"] for t in job["tasks"]}:
            self.factory.check_image(image)
        with self._create_lock:
            gone = self.ledger.get("job", job["job_id"]) if self.ledger else None
            if self._deleted(job["job_id"]) or gone:
                raise Conflict(
                    f"job {job['job_id']!r} ran on node {self.node_id!r} and was deleted; "
                    "a job id never runs twice",
                    reason="duplicate_job",
                )
            try:
                os.mkdir(self._path(job["job_id"]))
            except FileExistsError:
                raise Conflict(
                    f"job {job['job_id']!r} already exists on node {self.node_id!r}",
                    reason="duplicate_job",
                ) from None
            for task in job["tasks"]:
                task_dir = self._path(job["job_id"], f"task-{task['index']}")
                os.mkdir(task_dir)
                os.chmod(task_dir, 0o777)  # images that run as a non-root user can log too
                open(os.path.join(task_dir, "output.log"), "ab").close()
                # ...and append to it (the data dir above is 0700: no host user reaches it)
                os.chmod(os.path.join(task_dir, "output.log"), 0o666)
            self.jobs[job["job_id"]] = job
            self._locks[job["job_id"]] = threading.RLock()
            self._save(job)
        self._schedule(job)
        return self.model(job)

    def _schedule(self, job: dict) -> None:
        """Start pending tasks up to the job's parallelism."""
        lock = self._locks.get(job["job_id"])
        if lock is None:  # deleted meanwhile
            return
        with lock:
            if job["stop_requested"]:
                return
            running = sum(t["status"] == "running" for t in job["tasks"])
            for task in job["tasks"]:
                if job["parallelism"] and running >= job["parallelism"]:
                    break
                if task["status"] == "pending":
                    self._start_task(job, task)
                    running += 1

    def _container_name(self, job: dict, task: dict) -> str:
        return f"jr-{safe_name(self.node_id)}-j-{safe_name(job['job_id'])}-{task['index']}"

    def _start_task(self, job: dict, task: dict) -> None:
        spec = task["spec"]
        spec = ContainerSpec.from_json(spec)
        task_dir = self._path(job["job_id"], f"task-{task['index']}")
        task.update(status="running", started_at=time.time())
        self._save(job)  # "running" first: after a crash we look for the container by name
        try:
            task["container_id"] = self.factory.create(
                spec,
                name=self._container_name(job, task),
                kind="job",
                command=WRAPPER + task["argv"],
                label_extra={"job": job["job_id"], "task": str(task["index"])},
                binds={task_dir: {"bind": LOG_MOUNT, "mode": "rw"}},
            )
        except DockerException as exc:
            task.update(
                status="failed",
                returncode=-1,
                finished_at=time.time(),
                message=f"could not start the task's container: {exc}",
            )
            self._save(job)
            return
        self._save(job)
        self._watch(job, task)

    def _watch(self, job: dict, task: dict) -> None:
        threading.Thread(
            target=self._wait_task,
            args=(job, task),
            daemon=True,
            name=f"job-{job['job_id']}-{task['index']}",
        ).start()

    def _wait_task(self, job: dict, task: dict) -> None:
        cid = task["container_id"]
        timed_out = False
        try:
            left = None
            if task["timeout"]:
                left = max(0.1, task["started_at"] + task["timeout"] - time.time())
            try:
                self.api.wait(cid, timeout=left)
            except (ReadTimeout, RequestsConnectionError):
                timed_out = True
                self.api.stop(cid, timeout=self._stop_seconds)
                self.api.wait(cid)
            self._record_exit(job, task, timed_out=timed_out)
        except NotFound:
            self._mark_lost(job, task, "the task's container vanished")
        except Exception as exc:  # noqa: BLE001 - the engine broke; record it, never re-run
            log.warning("job %s task %s: %s", job["job_id"], task["index"], exc)
            self._mark_lost(job, task, f"lost track of the task's container: {exc}")
        self._schedule(job)

    def _record_exit(self, job: dict, task: dict, *, timed_out: bool = False) -> None:
        state = self.api.inspect_container(task["container_id"])["State"]
        rc = state["ExitCode"]
        final = {
            "returncode": rc,
            "oom_killed": bool(state.get("OOMKilled")),
            "finished_at": time.time(),
            "message": None,
        }
        if timed_out:
            final.update(status="timed_out", message=f"timed out after {task['timeout']:g} s")
        elif job["stop_requested"]:
            final.update(status="stopped", message="stopped on request")
        elif final["oom_killed"]:
            final.update(status="failed", message="killed by the kernel: out of memory")
        else:
            final["status"] = "completed" if rc == 0 else "failed"
        # On disk first (a crash before the removal loses nothing), but reported only once
        # the container is gone: whoever hears "ended" may count on nothing left behind.
        with self._locks[job["job_id"]]:
            task["exit"] = final
            write_json(self._path(job["job_id"], "job.json"), job)
        if task.get("output_paths"):
            from jupyter_remote.agent.web.transfers import save_outputs  # (handlers import jobs)

            final["outputs"] = save_outputs(  # before the container goes (autostop too)
                self.api,
                task["container_id"],
                self._path(job["job_id"], f"task-{task['index']}"),
                task["output_paths"],
                task["spec"].get("workdir"),
            )
        self.factory.remove(task["container_id"])
        self._apply_exit(job, task)

    def _apply_exit(self, job: dict, task: dict) -> None:
        with self._locks[job["job_id"]]:
            task.update(task.pop("exit"))
            self._finish_if_done(job)
            self._save(job)

    def _mark_lost(self, job: dict, task: dict, why: str) -> None:
        with self._locks[job["job_id"]]:
            task.update(status="lost", returncode=-1, finished_at=time.time(), message=why)
            self._finish_if_done(job)
            self._save(job)

    def _finish_if_done(self, job: dict) -> None:
        if job_status(job) in ("completed", "failed", "stopped") and not job["finished_at"]:
            job["finished_at"] = time.time()

    # -- stopping ----------------------------------------------------------------------
    def stop(self, job_id: str) -> dict:
        """Stop every running task and drop the pending ones (blocking)."""
        self.get(job_id)
        job = self.jobs[job_id]
        with self._locks[job_id]:
            job["stop_requested"] = True
            for task in job["tasks"]:
                if task["status"] == "pending":
                    task.update(status="stopped", message="stopped before it started")
            self._finish_if_done(job)
            self._save(job)
            running = [t for t in job["tasks"] if t["status"] == "running"]
        for task in running:
            try:
                self.api.stop(task["container_id"], timeout=self._stop_seconds)
            except NotFound:
                pass
        deadline = time.time() + self.stop_grace + 10
        while any(t["status"] == "running" for t in job["tasks"]) and time.time() < deadline:
            time.sleep(0.05)
        return self.model(job)

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
                    {"job_id": job_id, "deleted_at": time.time(), "status": status},
                )
                gone = self._unlink(job_id)
        self._discarded(job_id, gone)
        return {**model, "deleted": True}

    def _unlink(self, job_id: str) -> str:
        """Move a job's files out of the way and forget it (call holding _create_lock)."""
        os.makedirs(self.trash, exist_ok=True)
        gone = os.path.join(self.trash, f"{job_id}-{os.urandom(4).hex()}")
        os.rename(self._path(job_id), gone)  # atomic: no half-deleted record is loaded
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
        return self._path(job_id, f"task-{task}", "output.log")

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

    # -- after a restart ---------------------------------------------------------------
    def recover(self) -> int:
        """Load every job record and pick up its tasks where the last run left them."""
        shutil.rmtree(self.trash, ignore_errors=True)  # deletions a crash cut short
        for name in sorted(os.listdir(self.root)):
            job = read_json(self._path(name, "job.json"))
            if job is None:
                continue
            self.jobs[name] = job
            self._locks[name] = threading.RLock()
            with self._version_lock:
                self.version += 1
                job["version"] = self.version
            for task in job["tasks"]:
                if task["status"] == "running":
                    self._adopt(job, task)
                elif task["status"] in TASK_FINAL:  # removal was cut short by a crash
                    try:
                        self.factory.remove(self._container_name(job, task))
                    except DockerException as exc:
                        log.warning("could not remove a finished task's container: %s", exc)
            if not job["stop_requested"]:
                self._schedule(job)
        return len(self.jobs)

    def _adopt(self, job: dict, task: dict) -> None:
        try:
            info = self.api.inspect_container(self._container_name(job, task))
        except NotFound:
            if task.get("exit"):  # it ended and was removed; only the report was missing
                self._apply_exit(job, task)
            elif task["container_id"] is None:  # the agent died before creating it
                task["status"] = "pending"
                self._save(job)
            else:
                self._mark_lost(job, task, "the task's container vanished while the agent was down")
            return
        task["container_id"] = info["Id"]
        if info["State"]["Status"] == "created":
            self.api.start(info["Id"])
        if info["State"]["Running"] or info["State"]["Status"] == "created":
            self._watch(job, task)
        else:
            self._record_exit(job, task)
