"""Server-side jobs: batches of tasks spread over nodes, autostop, and degraded mode.

Each task becomes a one-task job on the agent it is sent to (id JOB.INDEX). The server
learns of every change from each node's long-polled change feed, so completion is known
at once, not at the next poll. A task on a node that is lost is marked lost and never
re-run; tasks not started yet go to the healthy nodes. When the node answers again, its
lost tasks are reconciled (reconcile.py): stopped there, output kept, told once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from jupyter_remote.protocol.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    NotFound,
    RemoteError,
    Unavailable,
)
from jupyter_remote.util.notify import Notifier
from jupyter_remote.protocol.bodies import JOB_DEFAULT_FIELDS, TASK_SPEC_FIELDS, TaskBody
from jupyter_remote.protocol.common import JOB_FINAL, TASK_FINAL
from jupyter_remote.protocol.common import job_status as status_of
from jupyter_remote.protocol.queries import PageQuery, finish_page
from jupyter_remote.protocol.server_bodies import ServerJobBody
from jupyter_remote.protocol.validation import parse_body
from jupyter_remote_server.nodes.registry import Node, NodeRegistry
from jupyter_remote_server.nodes.pool import ExecutorPool
from jupyter_remote_server.agents.pump import ThreadPump
from jupyter_remote_server.nodes.reconcile import LinkWatch, LostTasks
from jupyter_remote_server.store.retention import is_live, refuse_expired
from jupyter_remote_server.store.jobstore import JobStore

log = logging.getLogger("jupyter_remote_server")


def job_status(job: dict) -> str:
    """One word for the job, from its tasks (the rule the agent uses too)."""
    return status_of(job["tasks"], job["stop_requested"], job["autostop"])


class JobService:
    """Owns every job: submit, dispatch, watch, stop, autostop, wait, logs."""

    def __init__(
        self,
        *,
        registry: NodeRegistry,
        pool: ExecutorPool,
        store: JobStore,
        blocking: Callable,
        stream_executor: Executor,
        default_image: str,
        watch_wait: float = 10.0,
    ) -> None:
        self.registry = registry
        self.pool = pool
        self.store = store
        self.blocking = blocking
        self.stream_executor = stream_executor
        self.default_image = default_image
        self.watch_wait = watch_wait
        # only live jobs in memory (records.py); ended ones are read from the store
        self.jobs: dict[str, dict] = {j["job_id"]: j for j in store.load_live("job")}
        self._ended: set[str] = set()  # jobs to drop from memory at the next tick
        self.by_agent_job = {
            t["agent_job_id"]: (j["job_id"], t["index"])
            for j in self.jobs.values()
            for t in j["tasks"]
            if t["agent_job_id"]
        }
        # deleted jobs' ids, kept for good in the store: an id never runs twice
        self.deleted: set[str] = {d["job_id"] for d in store.load("job_deleted")}
        self.changes = Notifier()
        self._watchers: dict[str, asyncio.Task] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stop_tried: dict[str, float] = {}
        self.lost = LostTasks(registry=registry, blocking=blocking, changed=self._changed)
        self.lost.load(self.jobs)
        self.links = LinkWatch(registry)
        registry.listeners.append(self.on_node_state)

    # -- models ------------------------------------------------------------------------
    def model(self, job: dict) -> dict:
        tasks = job["tasks"]
        end = job["finished_at"] or time.time()
        return {
            **job,
            "status": job_status(job),
            "tasks_total": len(tasks),
            "tasks_done": sum(t["status"] in TASK_FINAL for t in tasks),
            "tasks_lost": sum(t["status"] == "lost" for t in tasks),
            "degraded": any(t["status"] == "lost" for t in tasks),
            "elapsed": round(end - job["created_at"], 3),
            "nodes_used": sorted({t["node_id"] for t in tasks if t["node_id"]}),
            "notices": [
                f"task {t['index']} ({t['name']}): {t['reconciled']['message']}"
                for t in tasks
                if t.get("reconciled")
            ],
        }

    def get(self, job_id: str) -> dict:
        return self.model(self._job(job_id))

    def _job(self, job_id: str) -> dict:
        job = self.jobs.get(job_id) or self.store.get("job", job_id)
        if job is None:
            refuse_expired(self.store, "job", job_id)
            was = " (it was deleted)" if job_id in self.deleted else ""
            raise NotFound(f"no job {job_id!r}{was}", reason="job_not_found")
        return job

    def list(self, query: PageQuery) -> dict:
        """One page, newest first by (created_at, id): from the store, live ones as in memory."""
        rows = self.store.page("job", query.limit + 1, query.after())
        rows = [self.jobs.get(r["job_id"], r) for r in rows]
        got = finish_page(rows, query.limit, "created_at", "job_id")
        return {**got, "items": [self.model(j) for j in got["items"]]}

    def _changed(self, job: dict) -> None:
        if job_status(job) in JOB_FINAL and not job["finished_at"]:
            job["finished_at"] = time.time()
        self.store.save("job", job["job_id"], job)
        if not is_live("job", job):
            self._ended.add(job["job_id"])
        self.changes.notify()

    def forget(self, job_id: str) -> None:
        """Drop an ended job from memory (it stays in the store until retention)."""
        job = self.jobs.get(job_id)
        if job is not None and is_live("job", job):
            return  # changed again since (a stop, a reconciliation)
        job = self.jobs.pop(job_id, None)
        for task in job["tasks"] if job else ():
            self.by_agent_job.pop(task["agent_job_id"], None)
        self._locks.pop(job_id, None)
        self._stop_tried.pop(job_id, None)

    # -- submitting --------------------------------------------------------------------
    def parse(self, body: ServerJobBody, data: dict) -> dict:
        """A complete job from a checked body: every task checked before anything is sent.

        `data` is the body's JSON: task specs are forwarded as given, the agent applies its
        own limits to them.
        """
        job_id = body.job_id or f"j-{uuid.uuid4().hex[:12]}"
        self._refuse_duplicate(job_id)
        raw = data.get("tasks") or [{k: data[k] for k in TASK_SPEC_FIELDS if k in data}]
        defaults = {k: data[k] for k in JOB_DEFAULT_FIELDS if k in data}
        tasks = [self._task(i, t, defaults) for i, t in enumerate(raw)]
        for node_id in body.nodes or ():
            self.registry.get(node_id)
        for image in sorted({t["spec"]["image"] for t in tasks}):
            self.pool.refuse_missing_image(image, body.nodes)
        job = {
            "job_id": job_id,
            "name": body.name or job_id,
            "created_at": time.time(),
            "finished_at": None,
            "autostop": body.autostop,
            "stop_requested": False,
            "parallelism": body.parallelism,
            "nodes": body.nodes,
            "tasks": tasks,
        }
        # Claimed with no await since the check above, and atomically in the store: of two
        # requests with one job id, one gets here; the other is a 409.
        if not self.store.reserve("job", job_id, job):
            raise Conflict(f"job {job_id!r} exists already", reason="duplicate_job")
        self.jobs[job_id] = job
        return job

    def _refuse_duplicate(self, job_id: str) -> None:
        if self.store.expired("job", job_id) is not None:
            raise Conflict(
                f"job {job_id!r} ran and its record expired; a job id never runs twice",
                reason="duplicate_job",
            )
        if job_id in self.deleted:
            raise Conflict(
                f"job {job_id!r} ran and was deleted; a job id never runs twice",
                reason="duplicate_job",
            )
        first = self.jobs.get(job_id)
        if first is not None:
            raise Conflict(
                f"job {job_id!r} exists already (status {job_status(first)})",
                reason="duplicate_job",
                job=self.model(first),
            )

    def _task(self, index: int, raw: object, defaults: dict) -> dict:
        """One task with the job's defaults, checked by TaskBody (a 400 naming the task)."""
        if not isinstance(raw, dict):
            raise BadRequest(f"task {index} must be an object", reason="bad_tasks")
        checked = parse_body(TaskBody, {**defaults, **raw}, where=f"task {index}")
        spec = {**defaults, **{k: raw[k] for k in TASK_SPEC_FIELDS if k in raw}}
        spec = {k: v for k, v in spec.items() if v is not None}
        spec.setdefault("image", self.default_image)
        return {
            "index": index,
            "name": checked.name or f"task-{index}",
            "spec": spec,
            "service": checked.service,
            "status": "pending",
            "node_id": None,
            "agent_job_id": None,
            "returncode": None,
            "oom_killed": False,
            "started_at": None,
            "finished_at": None,
            "message": None,
        }

    async def submit(self, job: dict) -> dict:
        """Start a job that parse() reserved."""
        self._changed(job)
        await self.dispatch(job)
        return self.model(job)

    # -- dispatching -------------------------------------------------------------------
    async def dispatch(self, job: dict) -> None:
        """Send pending tasks to healthy nodes, up to the job's parallelism."""
        lock = self._locks.setdefault(job["job_id"], asyncio.Lock())
        async with lock:
            for task in job["tasks"]:
                if job["stop_requested"] or task["status"] != "pending":
                    continue
                running = sum(t["status"] == "running" for t in job["tasks"])
                if job["parallelism"] and running >= job["parallelism"]:
                    return
                try:
                    node = self._choose(job, task)
                except Unavailable:
                    return  # no node can take it now; the next tick tries again
                await self._send(job, task, node)

    def _choose(self, job: dict, task: dict) -> Node:
        candidates = self.pool.candidates(task["spec"]["image"], job["nodes"])
        mine = {n.node_id: 0 for n in candidates}
        for t in job["tasks"]:
            if t["status"] == "running" and t["node_id"] in mine:
                mine[t["node_id"]] += 1
        return min(candidates, key=lambda n: (mine[n.node_id], n.load()))

    async def _send(self, job: dict, task: dict, node: Node) -> None:
        agent_job_id = f"{job['job_id']}.{task['index']}"
        body = {
            "job_id": agent_job_id,
            "name": f"{job['name']}/{task['name']}",
            "tasks": [task["spec"]],
        }
        try:
            # a cut link answers nothing for the read timeout: stop waiting once it is lost
            await self.links.call(node, self.blocking(lambda: node.client.submit_job(**body)))
        except RemoteError as exc:
            if exc.status == 409:
                pass  # it is there already: the change feed will tell its state
            elif exc.status < 500:
                task.update(
                    status="failed",
                    returncode=-1,
                    finished_at=time.time(),
                    node_id=node.node_id,
                    message=f"node {node.node_id!r} refused the task: {exc.message}",
                )
                self._changed(job)
                return
            elif not exc.details.get("sent", True):
                return  # never reached the node: still pending, sent later (not a retry)
            else:  # it may have arrived: never re-send; the node's feed will settle it
                log.warning(
                    "job %s: sending %s to %s broke: %s",
                    job["job_id"],
                    agent_job_id,
                    node.node_id,
                    exc.message,
                )
        task.update(
            status="running",
            node_id=node.node_id,
            agent_job_id=agent_job_id,
            started_at=task["started_at"] or time.time(),
        )
        self.by_agent_job[agent_job_id] = (job["job_id"], task["index"])
        if node.state == "lost":  # it turned lost while the send hung: lost, like the rest
            self.lost.lost(job, task, node)
        self._changed(job)

    # -- watching the nodes ------------------------------------------------------------
    def tick(self) -> None:
        """Keep one change-feed watcher per node and dispatch what waits (every 0.25 s)."""
        while self._ended:
            self.forget(self._ended.pop())
        for node_id, node in self.registry.nodes.items():
            watcher = self._watchers.get(node_id)
            if watcher is None or watcher.done():
                self._watchers[node_id] = asyncio.get_running_loop().create_task(self._watch(node))
        for node_id in set(self._watchers) - set(self.registry.nodes):
            self._watchers.pop(node_id).cancel()
        now = time.monotonic()
        for job in self.jobs.values():
            if any(t["status"] == "pending" for t in job["tasks"]) and not job["stop_requested"]:
                self._spawn(self.dispatch(job))
            if job_status(job) == "stopping" and now - self._stop_tried.get(job["job_id"], 0) > 1:
                # stopping is idempotent, so it is asked again until the node confirms
                self._stop_tried[job["job_id"]] = now
                running = [t for t in job["tasks"] if t["status"] == "running"]
                self._spawn(self._stop_tasks(job, running))
        self.lost.step(self.jobs, self._spawn)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, node: Node) -> None:
        epoch, since = None, 0
        loop = asyncio.get_running_loop()
        while node.node_id in self.registry.nodes:
            if node.state == "lost":  # its link may be cut: a long poll would hang for 40 s
                await asyncio.sleep(0.25)
                continue
            try:
                feed = await self.links.call(  # ...so one under way is dropped when it turns lost
                    node,
                    loop.run_in_executor(
                        self.stream_executor, node.client.job_changes, since, self.watch_wait
                    ),
                )
            except RemoteError:
                await asyncio.sleep(1.0)
                continue
            if feed["epoch"] != epoch:  # a new agent process: read its whole list
                epoch = feed["epoch"]
                if since:
                    since = 0
                    continue
            since = feed["version"]
            for agent_job in feed["jobs"]:
                self._apply(node, agent_job)

    def _apply(self, node: Node, agent_job: dict) -> None:
        where = self.by_agent_job.get(agent_job["job_id"])
        if where is None or where[0] not in self.jobs:
            return
        job = self.jobs[where[0]]
        task = job["tasks"][where[1]]
        theirs = agent_job["tasks"][0]
        if task["status"] in TASK_FINAL:
            if task["status"] == "lost":
                self.lost.seen(job, task, theirs)
            return
        if theirs["status"] == task["status"] == "running":
            return
        task.update(
            status=theirs["status"] if theirs["status"] != "pending" else "running",
            returncode=theirs["returncode"],
            oom_killed=theirs["oom_killed"],
            message=theirs["message"],
            finished_at=theirs["finished_at"],
        )
        if theirs.get("outputs") is not None:  # saved by the node before removal
            task["outputs"] = theirs["outputs"]
        self._changed(job)
        self._spawn(self._after_task(job))

    async def _after_task(self, job: dict) -> None:
        batch_active = any(
            not t["service"] and t["status"] in ("pending", "running") for t in job["tasks"]
        )
        if job["autostop"] and not batch_active:
            await self._stop_tasks(job, [t for t in job["tasks"] if t["status"] == "running"])
        await self.dispatch(job)

    def on_node_state(self, node: Node, old: str, new: str) -> None:
        """Degraded mode: a lost node's running tasks are lost; the rest carry on.

        They are reconciled (stopped there, never re-run) once the node answers again.
        """
        if new != "lost":
            return
        for job in self.jobs.values():
            hit = [
                t for t in job["tasks"] if t["status"] == "running" and t["node_id"] == node.node_id
            ]
            for task in hit:
                self.lost.lost(job, task, node)
            if hit:
                log.warning(
                    "job %s: %d task(s) lost with node %s; carrying on degraded",
                    job["job_id"],
                    len(hit),
                    node.node_id,
                )
                self._changed(job)
                self._spawn(self._after_task(job))

    # -- stopping, waiting, logs -------------------------------------------------------
    async def stop(self, job_id: str) -> dict:
        job = self._job(job_id)
        job["stop_requested"] = True
        for task in job["tasks"]:
            if task["status"] == "pending":
                task.update(status="stopped", message="stopped before it started")
        self._changed(job)
        await self._stop_tasks(job, [t for t in job["tasks"] if t["status"] == "running"])
        return self.model(job)

    async def _stop_tasks(self, job: dict, tasks: list[dict]) -> None:
        async def stop_one(task: dict) -> None:
            node = self.registry.nodes.get(task["node_id"])
            if node is None or node.state == "lost":
                return
            try:
                theirs = await self.blocking(node.client.stop_job, task["agent_job_id"])
            except RemoteError as exc:
                log.warning(
                    "could not stop %s on %s: %s", task["agent_job_id"], node.node_id, exc.message
                )
                return
            self._apply(node, theirs)

        await asyncio.gather(*(stop_one(t) for t in tasks))

    # -- deleting ----------------------------------------------------------------------
    async def delete(self, job_id: str, force: bool = False) -> dict:
        """Delete a final job: each task's agent job on its node, then the server's record.

        A node that does not answer keeps the whole record (503 naming it; delete again
        later), unless `force`: then its tasks are forgotten here and listed in the answer's
        `left_on_nodes`, never silently.
        """
        job = self._job(job_id)
        status = job_status(job)
        if status not in JOB_FINAL:
            raise Conflict(
                f"job {job_id!r} is {status}: stop it (or wait for it) first",
                reason="job_not_final",
                status=status,
            )
        left: list[dict] = []

        async def delete_one(task: dict) -> RemoteError | None:
            if not task["agent_job_id"] or task.get("deleted_on_node"):
                return None
            where = f"node {task['node_id']!r} (task {task['index']})"
            node = self.registry.nodes.get(task["node_id"])
            if node is None or not node.answering:
                why = "is not in the pool" if node is None else f"does not answer ({node.state})"
                error: RemoteError = Unavailable(
                    f"{where} {why}: job {job_id!r} kept; delete it again when the node "
                    "is back, or with force=1 to forget that node's copy",
                    reason="node_unavailable",
                    node_id=task["node_id"],
                )
            else:
                try:
                    await self.blocking(node.client.delete_job, task["agent_job_id"])
                    error = None
                except RemoteError as exc:
                    if exc.status == 404:
                        error = None  # gone there already (an earlier, cut-short delete)
                    elif exc.status == 409:
                        error = Conflict(
                            f"{where}: {exc.message}", reason=exc.reason, node_id=node.node_id
                        )
                    else:
                        error = (Unavailable if exc.status == 503 else ConnectionFailed)(
                            f"{where} could not delete {task['agent_job_id']!r}: {exc.message}; "
                            f"job {job_id!r} kept, delete it again later",
                            reason="node_unavailable",
                            node_id=node.node_id,
                        )
            if error is None:
                task["deleted_on_node"] = True
            elif force and error.status != 409:
                left.append({"node_id": task["node_id"], "agent_job_id": task["agent_job_id"]})
                error = None
            return error

        errors = await asyncio.gather(*(delete_one(t) for t in job["tasks"]))
        errors = [e for e in errors if e is not None]
        if errors:
            self.store.save("job", job_id, job)  # which copies are gone already
            raise errors[0]
        self.store.save("job_deleted", job_id, {"job_id": job_id, "deleted_at": time.time()})
        self.deleted.add(job_id)
        self.store.delete("job", job_id)
        self.jobs.pop(job_id, None)
        for task in job["tasks"]:
            self.by_agent_job.pop(task["agent_job_id"], None)
        self._locks.pop(job_id, None)
        self._stop_tried.pop(job_id, None)
        self.changes.notify()
        return {**self.model(job), "deleted": True, "left_on_nodes": left}

    async def wait(self, job_id: str, timeout: float) -> dict:
        """Long-poll: the job's model once it has ended, or after `timeout` seconds."""
        job = self._job(job_id)
        deadline = time.monotonic() + timeout
        while job_status(job) not in JOB_FINAL:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await self.changes.wait(left)
        return self.model(job)

    async def logs(
        self, job_id: str, index: int, offset: int, follow: bool
    ) -> AsyncIterator[bytes]:
        job = self._job(job_id)
        if not 0 <= index < len(job["tasks"]):
            raise BadRequest(
                f"job {job_id!r} has tasks 0..{len(job['tasks']) - 1}", reason="bad_task"
            )
        task = job["tasks"][index]
        if not task["agent_job_id"]:
            raise Conflict(
                f"task {index} of job {job_id!r} has not started (status {task['status']})",
                reason="not_started",
            )
        node = self.registry.answering(  # reading a log: any node that answers
            task["node_id"], f", which ran task {index}", "its log is there, to read later"
        )
        pump = ThreadPump(
            lambda: node.client.open_job_logs(task["agent_job_id"], 0, offset, follow),
            f"node {node.node_id!r}",
            self.stream_executor,
        )
        try:
            async for chunk in self.links.guard(node, pump.start()):  # a cut link ends it
                yield chunk
        finally:
            pump.close()

    def stop_watching(self) -> None:
        for watcher in self._watchers.values():
            watcher.cancel()
