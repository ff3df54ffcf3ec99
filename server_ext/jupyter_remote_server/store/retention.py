"""Record keeping for executions and jobs: what the store indexes, and retention.

The server keeps only live records in memory (an execution not settled yet, a job not
final, or one with a lost task that a returning node may still reconcile); the rest are
read from SQLite when asked for. Retention removes ended records oldest-first, `max_age`
after they ended or when they take more than `max_bytes`, never before `min_age`, at most
`per_pass` a pass. A removed id leaves a small row in the store's `expired` table, so it
answers 404 `expired` (with its outcome) and is refused for a new run while that row is
kept: `expired_keep` seconds, and at most half of `max_bytes` (the oldest go first;
those rows count towards `max_bytes` too).
"""

from __future__ import annotations

import logging
import time

from jupyter_remote.protocol.common import EXECUTION_FINAL, JOB_FINAL, job_status
from jupyter_remote.protocol.errors import NotFound
from jupyter_remote.util.retention import Policy, to_remove

log = logging.getLogger("jupyter_remote_server")

# Columns beside each record's JSON body: sort time, owner (kernel), end time when it may
# be removed, whether it stays in memory, and its size.
COLUMNS = (
    ("at", "REAL"),
    ("owner", "TEXT"),
    ("ended", "REAL"),
    ("live", "INTEGER"),
    ("size", "INTEGER"),
    ("notebook", "TEXT"),
)
KINDS = ("execution", "job")


def status_of(kind: str, record: dict) -> str:
    if kind == "job":
        return job_status(record["tasks"], record["stop_requested"], record.get("autostop", False))
    return record["status"]


def is_live(kind: str, record: dict) -> bool:
    """Kept in memory: an execution not final, a job not final or with a lost task that a
    returning node may still reconcile (reconcile.py)."""
    if kind == "execution":
        return record["status"] not in EXECUTION_FINAL
    return status_of(kind, record) not in JOB_FINAL or any(
        t["status"] == "lost" and t.get("agent_job_id") and not t.get("reconciled")
        for t in record["tasks"]
    )


def columns_of(kind: str, record: dict, body: str) -> tuple:
    """The COLUMNS values of a record of any kind (other kinds: only the size)."""
    if kind not in KINDS:
        return (None, None, None, 0, len(body), None)
    final = status_of(kind, record) in (EXECUTION_FINAL if kind == "execution" else JOB_FINAL)
    ended = (record.get("finished_at") or time.time()) if final else None
    return (
        record.get("created_at") or 0.0,
        record.get("kernel_id"),
        ended,
        int(is_live(kind, record)),
        len(body),
        record.get("notebook_path"),
    )


def outcome(kind: str, record: dict) -> dict:
    """What an expired id still tells: how it ended."""
    keep = ("returncode", "created_at", "finished_at", "node_id", "kernel_id")
    return {"status": status_of(kind, record), **{k: record[k] for k in keep if k in record}}


def refuse_expired(store, kind: str, key: str) -> None:
    """404 `expired` with the outcome, if retention removed this id."""
    stone = store.expired(kind, key)
    if stone is not None:
        raise NotFound(
            f"{kind} {key!r} ended and was removed by retention (status {stone.get('status')}); "
            "its record is gone",
            reason="expired",
            **{f"{kind}_id": key, **stone},
        )


class Retention:
    """Removes ended executions and jobs from the store (and from memory, if there)."""

    def __init__(self, store, policy: Policy, forget) -> None:
        self.store = store
        self.policy = policy
        self.forget = forget  # (kind, key): drop it from the services' memory
        self.last: dict = {}

    def sweep(self) -> dict:
        """One pass; blocking (SQLite), so it runs on a worker thread."""
        policy, now = self.policy, time.time()
        total = self.store.kept_bytes(KINDS)
        victims: dict[str, list[str]] = {kind: [] for kind in KINDS}
        ended = self.store.ended(KINDS, policy.per_pass)
        candidates = [(end, kind, key, size) for kind, key, end, size in ended]
        for kind, key in to_remove(candidates, total, policy, now):
            victims[kind].append(key)
        removed = 0
        for kind, keys in victims.items():
            for record in self.store.expire(kind, keys):
                self.forget(kind, record[f"{kind}_id"])
                removed += 1
        pruned = self.store.prune_expired(now - policy.expired_keep, policy.max_bytes // 2)
        self.last = {"at": now, "bytes_before": total, "removed": removed, "pruned": pruned}
        if removed:
            log.info("retention removed %d record(s) from the store", removed)
        return self.last
