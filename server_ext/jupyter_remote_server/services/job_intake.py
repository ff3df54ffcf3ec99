"""A job's shape: its model as answered, and a submitted body checked into a complete job."""

from __future__ import annotations

import time
import uuid

from jupyter_remote.protocol.bodies import JOB_DEFAULT_FIELDS, TASK_SPEC_FIELDS, TaskBody
from jupyter_remote.protocol.common import TASK_FINAL
from jupyter_remote.protocol.common import job_status as status_of
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound
from jupyter_remote.protocol.queries import PageQuery, finish_page
from jupyter_remote.protocol.server_bodies import ServerJobBody
from jupyter_remote.protocol.validation import parse_body
from jupyter_remote_server.services.job_fit import refuse_unfit
from jupyter_remote_server.services.user_quota import job_ask
from jupyter_remote_server.services.users import SERVER, Caller, id_used, not_found
from jupyter_remote_server.store.retention import refuse_expired


def job_status(job: dict) -> str:
    """One word for the job, from its tasks (the rule the agent uses too)."""
    return status_of(job["tasks"], job["stop_requested"], job["autostop"])


class JobIntake:
    """Reading and taking in jobs (a part of JobService, which sets `jobs`, `deleted`,
    `store`, `registry`, `pool`, `quota` and `default_image`)."""

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
            if job_id in self.deleted:
                raise NotFound(f"no job {job_id!r} (it was deleted)", reason="job_not_found")
            raise not_found("job", job_id)
        return job

    def list(self, query: PageQuery, caller: Caller = SERVER) -> dict:
        """One page, newest first by (created_at, id): from the store, live ones as in memory;
        the caller's own (an operator's: all)."""
        user = None if caller.operator else caller.user
        rows = self.store.page("job", query.limit + 1, query.after(), None, user)
        rows = [self.jobs.get(r["job_id"], r) for r in rows]
        got = finish_page(rows, query.limit, "created_at", "job_id")
        return {**got, "items": [self.model(j) for j in got["items"]]}

    # -- submitting --------------------------------------------------------------------
    def parse(
        self,
        body: ServerJobBody,
        data: dict,
        notebook_path: str | None = None,
        caller: Caller = SERVER,
    ) -> dict:
        """A complete job from a checked body: every task checked before anything is sent.

        `data` is the body's JSON: task specs are forwarded as given, the agent applies its
        own limits to them. `notebook_path`: the notebook of the kernel that sent it, if any.
        """
        job_id = body.job_id or f"j-{uuid.uuid4().hex[:12]}"
        self._refuse_duplicate(job_id, caller)
        raw = data.get("tasks") or [{k: data[k] for k in TASK_SPEC_FIELDS if k in data}]
        defaults = {k: data[k] for k in JOB_DEFAULT_FIELDS if k in data}
        tasks = [self._task(i, t, defaults) for i, t in enumerate(raw)]
        for node_id in body.nodes or ():
            self.registry.get(node_id)
        on = dict(body.on) if body.on else None  # tasks go only to nodes with these labels
        for image in sorted({t["spec"]["image"] for t in tasks}):
            self.pool.refuse_missing_image(image, body.nodes, on)
        among = [
            n
            for n in self.registry.nodes.values()
            if (body.nodes is None or n.node_id in body.nodes) and n.has_labels(on)
        ]
        for task in tasks:  # limits no node can give: refused now, as an execution's are
            refuse_unfit(among, task["spec"], f"task {task['index']}")
        job = {
            "job_id": job_id,
            "name": body.name or job_id,
            "created_at": time.time(),
            "finished_at": None,
            "autostop": body.autostop,
            "stop_requested": False,
            "parallelism": body.parallelism,
            "nodes": body.nodes,
            "on": on,
            "tasks": tasks,
        }
        if body.cell_id is not None:  # a notebook cell's --detach: a reloaded page finds it
            job.update(kernel_id=body.kernel_id, cell_id=body.cell_id, notebook_path=notebook_path)
        if caller.user is not None:
            job["user"] = caller.user
        # held against the user's quota until the job ends (what its tasks may hold at once)
        job["quota"] = job_ask([t["spec"] for t in tasks], body.parallelism)
        self.quota.take(caller.quota_key, f"job:{job_id}", job["quota"], "this job")
        # Claimed with no await since the check above, and atomically in the store: of two
        # requests with one job id, one gets here; the other is a 409.
        if not self.store.reserve("job", job_id, job):
            self.quota.give_back(f"job:{job_id}")
            raise Conflict(f"job {job_id!r} exists already", reason="duplicate_job")
        self.jobs[job_id] = job
        return job

    def _refuse_duplicate(self, job_id: str, caller: Caller = SERVER) -> None:
        seen = (
            self.jobs.get(job_id)
            or self.store.get("job", job_id)
            or self.store.expired("job", job_id)
            or self.store.get("job_deleted", job_id)
        )
        if not caller.sees(seen):
            raise id_used("job", job_id)
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
