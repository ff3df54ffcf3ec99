"""Server-side jobs: batches of tasks spread over nodes, autostop, and degraded mode.

Each task becomes a one-task job on the agent it is sent to (id JOB.INDEX). The server
learns of every change from each node's long-polled change feed, so completion is known
at once, not at the next poll. A task on a node that is lost is marked lost and never
re-run; tasks not started yet go to the healthy nodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from jupyter_remote.agent.specs import Limits, check_id, parse_argv, parse_container_spec
from jupyter_remote.errors import BadRequest, Conflict, NotFound, RemoteError, Unavailable
from jupyter_remote.notify import Notifier
from jupyter_remote_server.nodes import Node, NodeRegistry
from jupyter_remote_server.pool import ExecutorPool
from jupyter_remote_server.pump import ThreadPump
from jupyter_remote_server.store import JobStore

log = logging.getLogger("jupyter_remote_server")

TASK_FINAL = ("completed", "failed", "timed_out", "stopped", "lost")
JOB_FINAL = ("completed", "failed", "degraded", "stopped")
TASK_FIELDS = (
    "command",
    "python",
    "argv",
    "interpreter",
    "image",
    "memory",
    "cpus",
    "pids_limit",
    "env",
    "workdir",
    "network",
    "timeout",
)
DEFAULT_FIELDS = ("image", "memory", "cpus", "pids_limit", "env", "workdir", "network", "timeout")


def job_status(job: dict) -> str:
    """One word for the job, from its tasks."""
    tasks = job["tasks"]
    active = [t for t in tasks if t["status"] in ("pending", "running")]
    if job["stop_requested"]:
        return "stopping" if any(t["status"] == "running" for t in tasks) else "stopped"
    if any(not t["service"] for t in active):
        return "pending" if all(t["status"] == "pending" for t in tasks) else "running"
    if active:  # only services left: autostop ends them, else they run until stopped
        return "stopping" if job["autostop"] else "running"
    batch = [t for t in tasks if not t["service"]]
    if any(t["status"] in ("failed", "timed_out") for t in batch):
        return "failed"
    if any(t["status"] == "lost" for t in tasks):
        return "degraded"
    return "completed"


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
        self.jobs: dict[str, dict] = {j["job_id"]: j for j in store.load("job")}
        self.by_agent_job = {
            t["agent_job_id"]: (j["job_id"], t["index"])
            for j in self.jobs.values()
            for t in j["tasks"]
            if t["agent_job_id"]
        }
        self.changes = Notifier()
        self._watchers: dict[str, asyncio.Task] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stop_tried: dict[str, float] = {}
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
        }

    def get(self, job_id: str) -> dict:
        return self.model(self._job(job_id))

    def _job(self, job_id: str) -> dict:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(f"no job {job_id!r}", reason="job_not_found") from None

    def list(self) -> list[dict]:
        return [self.model(j) for j in sorted(self.jobs.values(), key=lambda j: j["created_at"])]

    def _changed(self, job: dict) -> None:
        if job_status(job) in JOB_FINAL and not job["finished_at"]:
            job["finished_at"] = time.time()
        self.store.save("job", job["job_id"], job)
        self.changes.notify()

    # -- submitting --------------------------------------------------------------------
    def parse(self, body: dict) -> dict:
        """A complete job from a request: every task checked before anything is sent."""
        job_id = body.get("job_id") or f"j-{uuid.uuid4().hex[:12]}"
        check_id(job_id, "job_id")
        if "." in job_id:
            raise BadRequest("job_id may not contain '.'", reason="bad_id")
        self._refuse_duplicate(job_id)
        raw = body.get("tasks")
        if raw is None:
            raw = [{k: body[k] for k in TASK_FIELDS if k in body}]
        if not isinstance(raw, list) or not raw or len(raw) > 1000:
            raise BadRequest("tasks must be a list of 1-1000 task objects", reason="bad_tasks")
        nodes = body.get("nodes")
        if nodes is not None:
            if not isinstance(nodes, list) or not nodes:
                raise BadRequest("nodes must be a non-empty list of node ids", reason="bad_nodes")
            for node_id in nodes:
                self.registry.get(node_id)
        for flag in ("autostop",):
            if not isinstance(body.get(flag, False), bool):
                raise BadRequest(f"{flag} must be true or false", reason=f"bad_{flag}")
        parallelism = body.get("parallelism", 0)
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 0:
            raise BadRequest(
                "parallelism must be an integer >= 0 (0: no limit)", reason="bad_parallelism"
            )
        defaults = {k: body[k] for k in DEFAULT_FIELDS if k in body}
        tasks = [self._parse_task(i, t, defaults) for i, t in enumerate(raw)]
        job = {
            "job_id": job_id,
            "name": body.get("name") or job_id,
            "created_at": time.time(),
            "finished_at": None,
            "autostop": body.get("autostop", False),
            "stop_requested": False,
            "parallelism": parallelism,
            "nodes": nodes,
            "tasks": tasks,
        }
        # Claimed with no await since the check above, and atomically in the store: of two
        # requests with one job id, one gets here; the other is a 409.
        if not self.store.reserve("job", job_id, job):
            raise Conflict(f"job {job_id!r} exists already", reason="duplicate_job")
        self.jobs[job_id] = job
        return job

    def _refuse_duplicate(self, job_id: str) -> None:
        first = self.jobs.get(job_id)
        if first is not None:
            raise Conflict(
                f"job {job_id!r} exists already (status {job_status(first)})",
                reason="duplicate_job",
                job=self.model(first),
            )

    def _parse_task(self, index: int, raw: object, defaults: dict) -> dict:
        if not isinstance(raw, dict):
            raise BadRequest(f"task {index} must be an object", reason="bad_tasks")
        spec = {**defaults, **{k: raw[k] for k in TASK_FIELDS if k in raw}}
        spec.setdefault("image", self.default_image)
        try:
            parse_argv(spec)
            parse_container_spec(spec, Limits(allow_network=True), self.default_image)
        except RemoteError as exc:
            raise BadRequest(f"task {index}: {exc.message}", reason=exc.reason) from None
        if not isinstance(raw.get("service", False), bool):
            raise BadRequest(f"task {index}: service must be true or false", reason="bad_tasks")
        return {
            "index": index,
            "name": raw.get("name") or f"task-{index}",
            "spec": spec,
            "service": raw.get("service", False),
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
            await self.blocking(lambda: node.client.submit_job(**body))
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
        self._changed(job)

    # -- watching the nodes ------------------------------------------------------------
    def tick(self) -> None:
        """Keep one change-feed watcher per node and dispatch what waits (every 0.25 s)."""
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

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, node: Node) -> None:
        epoch, since = None, 0
        loop = asyncio.get_running_loop()
        while node.node_id in self.registry.nodes:
            try:
                feed = await loop.run_in_executor(
                    self.stream_executor, node.client.job_changes, since, self.watch_wait
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
            if task["status"] == "lost" and theirs["status"] in TASK_FINAL:
                task["reported_after_loss"] = {k: theirs[k] for k in ("status", "returncode")}
                self._changed(job)
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
        """Degraded mode: a lost node's running tasks are lost; the rest carry on."""
        if new != "lost":
            return
        for job in self.jobs.values():
            hit = [
                t for t in job["tasks"] if t["status"] == "running" and t["node_id"] == node.node_id
            ]
            for task in hit:
                task.update(
                    status="lost",
                    returncode=-1,
                    finished_at=time.time(),
                    message=f"node {node.node_id!r} was lost ({node.reason}); the task "
                    "was not re-run",
                )
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
            async for chunk in pump.start():
                yield chunk
        finally:
            pump.close()

    def stop_watching(self) -> None:
        for watcher in self._watchers.values():
            watcher.cancel()
