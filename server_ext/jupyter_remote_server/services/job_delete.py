"""Deleting an ended job: its copy on each node first, then the server's record, for good."""

from __future__ import annotations

import asyncio
import time

from jupyter_remote.protocol.common import JOB_FINAL
from jupyter_remote.protocol.errors import Conflict, ConnectionFailed, RemoteError, Unavailable
from jupyter_remote_server.services.job_intake import job_status


class JobDeletion:
    """Deleting jobs (a part of JobService)."""

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
                    await node.client.delete_job(task["agent_job_id"])
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
        self.store.save(
            "job_deleted",
            job_id,
            {"job_id": job_id, "deleted_at": time.time(), "user": job.get("user")},
        )
        self.deleted.add(job_id)
        self.store.delete("job", job_id)
        self.jobs.pop(job_id, None)
        for task in job["tasks"]:
            self.by_agent_job.pop(task["agent_job_id"], None)
        self._locks.pop(job_id, None)
        self.stops.forget(job)
        self.changes.notify()
        return {**self.model(job), "deleted": True, "left_on_nodes": left}
