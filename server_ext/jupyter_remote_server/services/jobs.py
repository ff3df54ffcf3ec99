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
from collections.abc import AsyncIterator

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from jupyter_remote.protocol.common import JOB_FINAL, TASK_FINAL
from jupyter_remote.protocol.errors import BadRequest, Conflict, RemoteError, Unavailable
from jupyter_remote.util.notify import Notifier
from jupyter_remote_server.agents.http import Answer
from jupyter_remote_server.nodes.reconcile import LinkWatch, LostTasks
from jupyter_remote_server.nodes.registry import Node
from jupyter_remote_server.services.job_delete import JobDeletion
from jupyter_remote_server.services.job_intake import JobIntake, job_status
from jupyter_remote_server.services.job_stops import TaskStops
from jupyter_remote_server.store.retention import is_live

__all__ = ["JobService", "job_status"]

log = logging.getLogger("jupyter_remote_server")


class JobService(JobIntake, JobDeletion, LoggingConfigurable):
    """Owns every job: submit, dispatch, watch, stop, autostop, wait, logs.

    Made with `parent=` the RemoteManager, whose registry, pool and store it uses.
    """

    default_image = Unicode(help="Image used when a task names none.")
    watch_wait = Float(10.0, help="Seconds each node's change feed is long-polled for.")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        manager = self.parent
        self.registry = registry = manager.registry
        self.pool = manager.pool
        self.store = store = manager.store
        self.quota = manager.quota
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
        self._ends: dict[str, asyncio.Future] = {}  # job id -> its one waiter (wait())
        self.lost = LostTasks(registry=registry, changed=self._changed)
        self.lost.load(self.jobs)
        self.links = LinkWatch(registry)
        self.stops = TaskStops(registry=registry, links=self.links, apply=self._apply)
        registry.listeners.append(self.on_node_state)

    def _changed(self, job: dict) -> None:
        if job_status(job) in JOB_FINAL:
            self.quota.give_back(f"job:{job['job_id']}")
            if not job["finished_at"]:
                job["finished_at"] = time.time()
            end = self._ends.pop(job["job_id"], None)
            if end is not None and not end.done():
                end.set_result(None)
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
        if job:
            self.stops.forget(job)

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
                except (Unavailable, BadRequest):  # none now, or none with its labels now
                    return  # no node can take it now; the next tick tries again
                await self._send(job, task, node)

    def _choose(self, job: dict, task: dict) -> Node:
        spec = task["spec"]
        candidates = self.pool.candidates(
            spec["image"], job["nodes"], job.get("on"), spec.get("gpus")
        )
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
            await self.links.call(node, node.client.submit_job(**body))
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
        for job in self.jobs.values():
            if any(t["status"] == "pending" for t in job["tasks"]) and not job["stop_requested"]:
                self._spawn(self.dispatch(job))
            if job_status(job) == "stopping":
                # the job's one stopper (job_stops.py): a task with a stop call in flight is
                # not asked again; one the node did not confirm is asked after a backoff
                self.stops.stop(job)
        self.lost.step(self.jobs, self._spawn)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, node: Node) -> None:
        epoch, since = None, 0
        while node.node_id in self.registry.nodes:
            if node.state == "lost":  # its link may be cut: a long poll would hang for 40 s
                await asyncio.sleep(0.25)
                continue
            try:
                feed = await self.links.call(  # ...so one under way is dropped when it turns lost
                    node, node.client.job_changes(since, self.watch_wait)
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
            self.stops.stop(job)  # in the background: the job's stopper, its calls on their own
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
        await self.stops.settle(job)  # the calls in flight, all at once (one per task)
        return self.model(job)

    async def wait(self, job_id: str, timeout: float) -> dict:
        """Long-poll: the job's model once it has ended, or after `timeout` seconds."""
        job = self._job(job_id)
        if job_status(job) not in JOB_FINAL and timeout > 0:
            end = self._ends.get(job_id)
            if end is None or end.done():  # one per job, however many wait on it
                end = self._ends[job_id] = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(end), timeout)
            except asyncio.TimeoutError:
                pass
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
        what = f"node {node.node_id!r}"
        opening = node.client.open_job_logs(task["agent_job_id"], 0, offset, follow, what)
        answer: Answer = await self.links.call(node, opening)
        try:
            async for chunk in self.links.guard(node, answer):  # a cut link ends it
                yield chunk
        finally:
            answer.close()

    def stop_watching(self) -> None:
        for watcher in self._watchers.values():
            watcher.cancel()
        self.stops.cancel_all()
