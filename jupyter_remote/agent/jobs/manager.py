"""The JobManager: submits jobs, starts their tasks up to the parallelism, watches each
task's container to its exit, stops jobs, and picks them up again after a restart.

Each task's container writes its output straight into a log file on the agent's disk
(a bind mount), and keeps its exit code until the agent has recorded it; so an agent that
was killed finds its tasks again by name and label and reports real exit codes and logs.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from contextlib import nullcontext
from dataclasses import replace

from docker.errors import DockerException, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from jupyter_remote.agent.containers import ContainerFactory
from jupyter_remote.agent.gpus import GpuPool
from jupyter_remote.agent.jobs.plan import LOG_MOUNT, WRAPPER, job_status, plan
from jupyter_remote.agent.jobs.store import JobStore
from jupyter_remote.agent.outputs import save_outputs
from jupyter_remote.agent.specs import ContainerSpec, Limits
from jupyter_remote.agent.state import read_json, write_json
from jupyter_remote.protocol.bodies import JobBody
from jupyter_remote.protocol.common import TASK_FINAL
from jupyter_remote.protocol.errors import BadRequest, Conflict, RemoteError

log = logging.getLogger("jupyter_remote.agent")


class JobManager(JobStore):
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
        super().__init__(data_dir=data_dir, node_id=node_id, api=factory.api)
        self.factory = factory
        self.limits = limits
        self.default_image = default_image
        self.stop_grace = stop_grace
        self._stop_seconds = max(1, math.ceil(stop_grace))  # Docker takes whole seconds
        self.gpus = GpuPool(node_id=node_id)  # the Agent's, with the node's inventory
        # a task's start within its tenant's quota: yields None, or why it may not start
        self.admit = lambda job, task: nullcontext(None)

    @staticmethod
    def holder(job_id: str, index: int) -> str:
        """Who holds a job task's GPUs in the GpuPool."""
        return f"job:{job_id}/{index}"

    def live_holders(self) -> set[str]:
        """The GPU holders of tasks still running (after a restart, the rest are freed)."""
        return {
            self.holder(job["job_id"], task["index"])
            for job in list(self.jobs.values())
            for task in job["tasks"]
            if task["status"] == "running"
        }

    def _take_first_gpus(self, job: dict) -> list[str]:
        """The GPUs of the tasks that start at once, all or none: 409 `gpus_unavailable`
        before the job is recorded. Later tasks take theirs when they start."""
        first = job["tasks"][: job["parallelism"] or None]
        taken = []
        try:
            for task in first:
                want = task["spec"].get("gpu_request")
                if want is not None:
                    holder = self.holder(job["job_id"], task["index"])
                    self.gpus.take(holder, want if isinstance(want, int) else tuple(want))
                    taken.append(holder)
        except RemoteError:
            for holder in taken:
                self.gpus.release(holder)
            raise
        return taken

    def _release_gpus(self, job: dict, task: dict) -> None:
        self.gpus.release(self.holder(job["job_id"], task["index"]))

    def parse(self, body: JobBody) -> dict:
        """A complete job record from a typed request, checked before anything starts."""
        return plan(self, body)

    # -- submitting --------------------------------------------------------------------
    def submit(self, job: dict) -> dict:
        """Record the job and start its first tasks (blocking: call off the event loop)."""
        for task in job["tasks"]:  # GPUs this node could never give: 400, nothing made
            try:
                self.gpus.check(ContainerSpec.from_json(task["spec"]).gpu_request)
            except BadRequest as exc:
                raise BadRequest(
                    f"task {task['index']}: {exc.message}", reason=exc.reason
                ) from None
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
            if os.path.exists(self.path(job["job_id"])):
                raise Conflict(
                    f"job {job['job_id']!r} already exists on node {self.node_id!r}",
                    reason="duplicate_job",
                )
            taken = self._take_first_gpus(job)
            try:
                os.mkdir(self.path(job["job_id"]))
            except FileExistsError:
                for holder in taken:
                    self.gpus.release(holder)
                raise Conflict(
                    f"job {job['job_id']!r} already exists on node {self.node_id!r}",
                    reason="duplicate_job",
                ) from None
            for task in job["tasks"]:
                task_dir = self.path(job["job_id"], f"task-{task['index']}")
                os.mkdir(task_dir)
                os.chmod(task_dir, 0o777)  # images that run as a non-root user can log too
                open(os.path.join(task_dir, "output.log"), "ab").close()
                # ...and append to it (the data dir above is 0700: no host user reaches it)
                os.chmod(os.path.join(task_dir, "output.log"), 0o666)
            self.jobs[job["job_id"]] = job
            self._locks[job["job_id"]] = threading.RLock()
            self.save(job)
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

    def _start_task(self, job: dict, task: dict) -> None:
        """Start it, or fail it when its tenant's quota is used up by then."""
        with self.admit(job, task) as refused:
            if refused is None:
                self._start_admitted(job, task)
                return
        self._not_started(job, task, refused.message)

    def _not_started(self, job: dict, task: dict, why: str) -> None:
        """A task whose turn came but that cannot start (quota, GPUs): failed, never run."""
        task.update(
            status="failed", returncode=-1, finished_at=time.time(), message=f"not started: {why}"
        )
        self._finish_if_done(job)
        self.save(job)

    def _start_admitted(self, job: dict, task: dict) -> None:
        spec = ContainerSpec.from_json(task["spec"])
        task_dir = self.path(job["job_id"], f"task-{task['index']}")
        if spec.gpu_request is not None:
            try:
                spec = replace(
                    spec,
                    gpus=self.gpus.take(
                        self.holder(job["job_id"], task["index"]), spec.gpu_request
                    ),
                )
            except RemoteError as exc:  # GPUs held by others when a later task's turn came
                self._not_started(job, task, exc.message)
                return
            task["spec"]["gpus"] = list(spec.gpus)
        task.update(status="running", started_at=time.time())
        self.save(job)  # "running" first: after a crash we look for the container by name
        try:
            task["container_id"] = self.factory.create(
                spec,
                name=self._container_name(job, task),
                kind="job",
                command=WRAPPER + task["argv"],
                label_extra={"job": job["job_id"], "task": str(task["index"])},
                binds={task_dir: {"bind": LOG_MOUNT, "mode": "rw"}},
            )
        except (DockerException, RemoteError) as exc:
            self._release_gpus(job, task)
            why = exc.message if isinstance(exc, RemoteError) else exc
            task.update(
                status="failed",
                returncode=-1,
                finished_at=time.time(),
                message=f"could not start the task's container: {why}",
            )
            self.save(job)
            return
        self.save(job)
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
            write_json(self.path(job["job_id"], "job.json"), job)
        if task.get("output_paths"):
            final["outputs"] = save_outputs(  # before the container goes (autostop too)
                self.api,
                task["container_id"],
                self.path(job["job_id"], f"task-{task['index']}"),
                task["output_paths"],
                task["spec"].get("workdir"),
            )
        self.factory.remove(task["container_id"])
        self._release_gpus(job, task)
        self._apply_exit(job, task)

    def _apply_exit(self, job: dict, task: dict) -> None:
        with self._locks[job["job_id"]]:
            task.update(task.pop("exit"))
            self._finish_if_done(job)
            self.save(job)

    def _mark_lost(self, job: dict, task: dict, why: str) -> None:
        self._release_gpus(job, task)
        with self._locks[job["job_id"]]:
            task.update(status="lost", returncode=-1, finished_at=time.time(), message=why)
            self._finish_if_done(job)
            self.save(job)

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
            self.save(job)
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

    # -- after a restart ---------------------------------------------------------------
    def recover(self) -> int:
        """Load every job record and pick up its tasks where the last run left them."""
        shutil.rmtree(self.trash, ignore_errors=True)  # deletions a crash cut short
        for name in sorted(os.listdir(self.root)):
            job = read_json(self.path(name, "job.json"))
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
                self.save(job)
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
