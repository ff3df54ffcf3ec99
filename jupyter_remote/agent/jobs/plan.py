"""A job from a typed request: its record and each task's argv and container, checked
before anything starts; and one word for a job's state from its tasks'."""

from __future__ import annotations

import os
import time

from jupyter_remote.agent.specs import argv_of, container_spec
from jupyter_remote.protocol.bodies import JobBody, TaskBody
from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.validation import parse_body

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
    "gpus",
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


def plan(mgr, body: JobBody) -> dict:
    """A complete job record; `mgr` gives limits and default_image."""
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
            spec = container_spec(task, mgr.limits, mgr.default_image)
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
