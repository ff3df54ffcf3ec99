"""Retention on the agent: finished execution and job records, and their logs, are kept for
`max_age` seconds and `max_bytes` in all, then removed oldest-first (by end time) in the
background, at most `per_pass` records a pass.

`max_bytes` caps the whole data dir but the agent's own log files (*.log at its top): the
records, their logs, the ledger, and what sessions and runners keep there.

Never removed: a running execution (a session's current cell included), a job with a task
that is not final or whose container still exists, and anything that finished less than
`min_age` ago (a server cut off from this node settles its executions from these records;
after that the ledger still tells the outcome). Each removed id goes to the ledger first,
so it answers 404 `expired` and is never run again while the ledger keeps it.
"""

from __future__ import annotations

import logging
import os
import time

from jupyter_remote.agent.index import disk_bytes
from jupyter_remote.agent.ledger import Ledger
from jupyter_remote.util.retention import Policy, to_remove

log = logging.getLogger("jupyter_remote.agent")


class Retention:
    """One sweep at a time, on a worker thread (file removals block)."""

    def __init__(self, *, data_dir: str, executions, jobs, ledger: Ledger, policy: Policy) -> None:
        self.data_dir = data_dir
        self.executions = executions
        self.jobs = jobs
        self.ledger = ledger
        self.policy = policy
        self._job_bytes: dict[str, int] = {}  # final jobs' disk use, measured once
        self.last: dict = {}

    def usage(self) -> tuple[int, list[tuple[float, str, str, int]]]:
        """Bytes kept in all, and the removable records oldest first: (end, kind, id, bytes)."""
        running = self.executions.running
        done = self.executions.index.refresh(running)
        total = self._rest() + sum(d.bytes for d in done.values())
        total += sum(disk_bytes(self.executions.record_dir(eid)) for eid in list(running))
        candidates = [(d.finished_at, "execution", eid, d.bytes) for eid, d in done.items()]
        for job_id, finished in self.jobs.finished():
            size = self._job_bytes.get(job_id)
            if size is None:
                size = disk_bytes(self.jobs.path(job_id))
                if finished is not None:
                    self._job_bytes[job_id] = size
            total += size
            if finished is not None:
                candidates.append((finished, "job", job_id, size))
        candidates.sort()
        return total, candidates

    def _rest(self) -> int:
        """The data dir's blocks outside the records (ledger, sessions, runners)."""
        records = {os.path.abspath(p) for p in (self.executions.root, self.jobs.root)}
        total = 0
        for entry in os.scandir(self.data_dir):
            if os.path.abspath(entry.path) in records:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
            elif entry.is_dir(follow_symlinks=False):
                total += disk_bytes(entry.path)
            elif not entry.name.endswith(".log"):
                total += entry.stat(follow_symlinks=False).st_blocks * 512
        return total + os.stat(self.data_dir).st_blocks * 512

    def sweep(self) -> dict:
        """Remove what the policy no longer keeps; returns what it did."""
        now = time.time()
        total, candidates = self.usage()
        victims: dict[str, list[str]] = {"execution": [], "job": []}
        for kind, record_id in to_remove(candidates, total, self.policy, now):
            victims[kind].append(record_id)
        removed = self.executions.expire(victims["execution"])
        removed += self.jobs.expire(victims["job"])
        for job_id in victims["job"]:
            self._job_bytes.pop(job_id, None)
        dropped = self.ledger.prune(self.policy.max_bytes // 2)
        self.last = {
            "at": now,
            "bytes_before": total,
            "removed": removed,
            "ledger_dropped": dropped,
            "ledger_size": self.ledger.count(),
        }
        if removed:
            log.info("retention removed %d record(s); %d bytes were kept before", removed, total)
        return self.last
