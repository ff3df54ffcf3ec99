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
import threading
import time
from dataclasses import replace

from jupyter_remote.protocol.common import EXECUTION_FINAL, JOB_FINAL, job_status
from jupyter_remote.protocol.errors import NotFound
from jupyter_remote.util.retention import Policy, to_remove

log = logging.getLogger("jupyter_remote_server")

# Columns beside each record's JSON body: sort time, owner (kernel), end time when it may
# be removed, whether it stays in memory, its size, its notebook and the Jupyter user.
COLUMNS = (
    ("at", "REAL"),
    ("owner", "TEXT"),
    ("ended", "REAL"),
    ("live", "INTEGER"),
    ("size", "INTEGER"),
    ("notebook", "TEXT"),
    ("user", "TEXT"),
)
KINDS = ("execution", "job")


def _add(table: str, kind: str, size: str, rows: int) -> str:
    return (
        f"INSERT INTO totals VALUES ('{table}', {kind}, {size}, {rows}) ON CONFLICT (tbl, kind) "
        "DO UPDATE SET bytes = bytes + excluded.bytes, rows = rows + excluded.rows;"
    )


# Running byte and row totals per table and kind, kept by triggers in the writing
# transaction itself: exact across restarts, crashes and two servers sharing the file.
TRIGGERS = {
    f"{table}_total_{event}": (
        f"AFTER {event.upper()}{' OF ' + column if event == 'update' else ''} ON {table} BEGIN "
        + (_add(table, "old.kind", f"-{size.format('old')}", -1) if event != "insert" else "")
        + (_add(table, "new.kind", size.format("new"), 1) if event != "delete" else "")
        + " END"
    )
    for table, size, column in (
        ("records", "coalesce({}.size, 0)", "kind, size"),
        ("expired", "length({}.body)", "kind, body"),
    )
    for event in ("insert", "delete", "update")
}


class StoreLock:
    """The store's one lock; a background pass gives way between its batches to whoever
    waits for it (a plain Lock lets the releasing thread take it straight back)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0

    def __enter__(self) -> StoreLock:
        if not self._lock.acquire(blocking=False):
            with self._count:
                self.waiting += 1
            self._lock.acquire()
            with self._count:
                self.waiting -= 1
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def give_way(self, most: float = 0.05) -> None:
        """Between two batches of a background pass: let a waiting caller go first."""
        end = time.monotonic() + most
        while self.waiting and time.monotonic() < end:
            time.sleep(0.0002)


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
        return (None, None, None, 0, len(body), None, None)
    final = status_of(kind, record) in (EXECUTION_FINAL if kind == "execution" else JOB_FINAL)
    ended = (record.get("finished_at") or time.time()) if final else None
    return (
        record.get("created_at") or 0.0,
        record.get("kernel_id"),
        ended,
        int(is_live(kind, record)),
        len(body),
        record.get("notebook_path"),
        record.get("user"),
    )


def outcome(kind: str, record: dict) -> dict:
    """What an expired id still tells: how it ended."""
    keep = ("returncode", "created_at", "finished_at", "node_id", "kernel_id", "user")
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
        """One pass, a batch at a time: each read and each removal holds the store only
        briefly, so a save waits at most one batch. Blocking (SQLite): on a worker thread."""
        policy, now = self.policy, time.time()
        total = before = self.store.kept_bytes(KINDS)  # the running total: no scan
        removed = 0
        while removed < policy.per_pass:
            asked = min(self.store.batch, policy.per_pass - removed)
            ended = self.store.ended(KINDS, asked)
            sizes = {(kind, key): size for kind, key, _, size in ended}
            candidates = [(end, kind, key, size) for kind, key, end, size in ended]
            left = replace(policy, per_pass=policy.per_pass - removed)
            chosen = to_remove(candidates, total, left, now)
            victims: dict[str, list[str]] = {kind: [] for kind in KINDS}
            for kind, key in chosen:
                victims[kind].append(key)
            gone = 0
            for kind, keys in victims.items():
                for record in self.store.expire(kind, keys):
                    key = record[f"{kind}_id"]
                    self.forget(kind, key)
                    total -= sizes.get((kind, key), 0)
                    gone += 1
            removed += gone
            if not gone or len(chosen) < len(candidates) or len(candidates) < asked:
                break  # the rest are younger, or under the limits
            self.store.give_way()
        pruned = self.store.prune_expired(now - policy.expired_keep, policy.max_bytes // 2)
        self.last = {"at": now, "bytes_before": before, "removed": removed, "pruned": pruned}
        if removed:
            log.info("retention removed %d record(s) from the store", removed)
        return self.last
