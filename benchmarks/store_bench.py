"""The server's SQLite store at 1M executions: retention beside saves from the event loop.

One file of STORE_BENCH_ROWS (1,000,000) ended executions is built with executemany, then
copied: the old store (its retention code kept below, as it was before issue 19) runs on
one copy, the new one on the other. For each, SWEEPS retention passes run on one thread
(default policy, a week's age: each pass removes `per_pass` = 1,000 records) while another
thread saves fresh execution records one by one, as the event loop does. Printed: the
longest and p99 save, the longest hold of the store lock by the sweep, and new against old.
Target (issue 19): no save waits more than 20 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time

from jupyter_remote.util.retention import DAY, Policy, to_remove
from jupyter_remote_server.store.jobstore import SQLiteJobStore
from jupyter_remote_server.store.retention import (
    COLUMNS,
    KINDS,
    Retention,
    StoreLock,
    columns_of,
    outcome,
)

ROWS = int(os.environ.get("STORE_BENCH_ROWS", "1000000"))
SWEEPS = int(os.environ.get("STORE_BENCH_SWEEPS", "3"))
ALONE = float(os.environ.get("STORE_BENCH_ALONE", "3"))  # seconds of saves before the sweeps
POLICY = Policy(max_bytes=1 << 30)  # the server's defaults (1 GiB, a week, 1,000 a pass)
OLD = 20 * POLICY.per_pass  # rows past max_age: every pass has a full 1,000 to remove


class TimedLock(StoreLock):
    """The store lock, timing how long each thread holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: dict[str, list[float]] = {}
        self.waits: dict[str, list[float]] = {}
        self._since = 0.0

    def __enter__(self) -> TimedLock:
        t0 = time.perf_counter()
        super().__enter__()
        self._since = time.perf_counter()
        self.waits.setdefault(threading.current_thread().name, []).append(self._since - t0)
        return self

    def __exit__(self, *exc) -> None:
        held = time.perf_counter() - self._since
        self.holds.setdefault(threading.current_thread().name, []).append(held)
        super().__exit__(*exc)


class OldStore(SQLiteJobStore):
    """The store before issue 19: a scan for the byte total, one transaction a pass,
    SQLite's own checkpoints in the commit that crosses 1,000 pages of WAL."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        with self._lock:
            self._db.execute("PRAGMA wal_autocheckpoint=1000")

    def _checkpoint(self) -> None:
        pass

    def _add_totals(self) -> None:
        pass

    def ended(self, kinds, limit):
        marks = ", ".join("?" * len(kinds))
        with self._lock:
            return self._db.execute(
                f"SELECT kind, key, ended, size FROM records WHERE ended IS NOT NULL "
                f"AND live = 0 AND kind IN ({marks}) ORDER BY ended LIMIT ?",
                (*kinds, limit),
            ).fetchall()

    def kept_bytes(self, kinds):
        marks = ", ".join("?" * len(kinds))
        with self._lock:
            row = self._db.execute(
                f"SELECT coalesce(sum(size), 0) FROM records WHERE kind IN ({marks})", kinds
            ).fetchone()
            gone = self._db.execute("SELECT coalesce(sum(length(body)), 0) FROM expired")
            return int(row[0]) + int(gone.fetchone()[0])

    def expire(self, kind, keys):
        removed, now = [], time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for key in keys:
                row = self._db.execute(
                    "SELECT body FROM records WHERE kind = ? AND key = ? "
                    "AND ended IS NOT NULL AND live = 0",
                    (kind, key),
                ).fetchone()
                if row is None:
                    continue
                record = json.loads(row[0])
                stone = {"expired_at": now, **outcome(kind, record)}
                self._db.execute(
                    "INSERT OR REPLACE INTO expired VALUES (?, ?, ?, ?)",
                    (kind, key, json.dumps(stone, separators=(",", ":")), now),
                )
                self._db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
                removed.append(record)
            self._db.execute("COMMIT")
        return removed

    def prune_expired(self, before, most_bytes):
        with self._lock:
            dropped = self._db.execute("DELETE FROM expired WHERE at < ?", (before,)).rowcount
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(length(body)), 0) FROM expired"
            ).fetchone()
            if most_bytes and size > most_bytes:
                extra = count - int(count * most_bytes / 2 / size)
                dropped += self._db.execute(
                    "DELETE FROM expired WHERE (kind, key) IN "
                    "(SELECT kind, key FROM expired ORDER BY at LIMIT ?)",
                    (extra,),
                ).rowcount
        return dropped


def old_sweep(store, policy: Policy, forget) -> dict:
    """Retention.sweep before issue 19: one read, one removal, one prune."""
    now = time.time()
    total = store.kept_bytes(KINDS)
    ended = store.ended(KINDS, policy.per_pass)
    victims: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for kind, key in to_remove([(e, k, i, s) for k, i, e, s in ended], total, policy, now):
        victims[kind].append(key)
    removed = 0
    for kind, keys in victims.items():
        for record in store.expire(kind, keys):
            forget(kind, record[f"{kind}_id"])
            removed += 1
    store.prune_expired(now - policy.expired_keep, policy.max_bytes // 2)
    return {"removed": removed}


def record(i: int, finished: float) -> dict:
    return {
        "execution_id": f"x-{i:08d}",
        "kernel_id": f"k-{i % 500:04d}-5b1e7d0c-2f0e-4c8e-9a55-0d2c9f1b3e77",
        "node_id": f"node-{i % 200}",
        "status": "completed",
        "returncode": 0,
        "command": f"python train.py --epochs 3 --seed {i}",
        "image": "jupyter-remote/python:local",
        "notebook_path": f"work/notebook-{i % 300}.ipynb",
        "cell_id": f"c0ffee00-{i:08d}",
        "created_at": finished - 5.0,
        "finished_at": finished,
    }


def build(path: str) -> float:
    """A store file of ROWS ended executions, the oldest OLD past max_age; seconds taken."""
    t0, now = time.perf_counter(), time.time()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    cols = ", ".join(f"{name} {sql_type}" for name, sql_type in COLUMNS)
    db.execute(
        "CREATE TABLE records (kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, "
        f"updated REAL DEFAULT (julianday('now')), {cols}, PRIMARY KEY (kind, key))"
    )
    marks = ", ".join("?" * (3 + len(COLUMNS)))
    names = ", ".join(name for name, _ in COLUMNS)
    db.execute("BEGIN")
    for start in range(0, ROWS, 50_000):

        def rows(start=start):
            for i in range(start, min(start + 50_000, ROWS)):
                finished = now - (8 * DAY if i < OLD else DAY) + i * 1e-3
                rec = record(i, finished)
                body = json.dumps(rec, separators=(",", ":"))
                yield ("execution", rec["execution_id"], body, *columns_of("execution", rec, body))

        db.executemany(f"INSERT INTO records (kind, key, body, {names}) VALUES ({marks})", rows())
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    OldStore(path).close()  # the indexes, as a server's first open makes them
    return time.perf_counter() - t0


def run(store: SQLiteJobStore, sweep) -> dict:
    """Saves one by one on a thread, ALONE seconds by themselves, then beside SWEEPS
    retention passes on another thread."""
    lock = store._lock = TimedLock()
    saves: list[tuple[float, float]] = []  # (start, seconds)
    done = threading.Event()

    def saver() -> None:
        i, now = 0, time.time()
        while not done.is_set():
            rec = {**record(ROWS + i, now), "status": "running", "finished_at": None}
            t0 = time.perf_counter()
            store.save("execution", rec["execution_id"], rec)
            saves.append((t0, time.perf_counter() - t0))
            i += 1
            time.sleep(0.001)  # the loop does other work between two saves

    thread = threading.Thread(target=saver, name="loop")
    thread.start()
    time.sleep(ALONE)
    sweeps, removed, start = [], 0, time.perf_counter()
    for _ in range(SWEEPS):
        t0 = time.perf_counter()
        removed += sweep()["removed"]
        sweeps.append(time.perf_counter() - t0)
    time.sleep(0.2)
    done.set()
    thread.join()
    holds = lock.holds.get("MainThread", [0.0])
    waits = lock.waits.get("loop", [0.0])
    alone = max(took for t0, took in saves if t0 < start)
    ordered = sorted(took for t0, took in saves if t0 >= start)
    return {
        "alone_max_ms": alone * 1e3,
        "saves": len(ordered),
        "save_max_ms": ordered[-1] * 1e3,
        "save_p99_ms": ordered[int(len(ordered) * 0.99)] * 1e3,
        "wait_max_ms": max(waits) * 1e3,
        "sweep_ms": max(sweeps) * 1e3,
        "hold_max_ms": max(holds) * 1e3,
        "holds": len(holds),
        "removed": removed,
    }


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="jr-store-bench-")
    try:
        old_path, new_path = os.path.join(tmp, "old.sqlite"), os.path.join(tmp, "new.sqlite")
        print(f"building {ROWS:,} execution rows: {build(old_path):.1f} s")
        shutil.copy(old_path, new_path)
        t0 = time.perf_counter()
        new = SQLiteJobStore(new_path)
        print(f"new store's first open (counts the totals once): {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        SQLiteJobStore(new_path).close()
        print(f"a later open: {(time.perf_counter() - t0) * 1e3:.1f} ms")
        old = OldStore(old_path)
        forget = lambda kind, key: None  # noqa: E731 - the services' memory: none here
        results = {
            "old": run(old, lambda: old_sweep(old, POLICY, forget)),
            "new": run(new, Retention(new, POLICY, forget).sweep),
        }
        for name, r in results.items():
            print(
                f"{name}: {SWEEPS} sweeps removed {r['removed']:,} (longest {r['sweep_ms']:.0f} "
                f"ms, {r['holds']} lock holds, longest {r['hold_max_ms']:.1f} ms); "
                f"{r['saves']} saves meanwhile: longest {r['save_max_ms']:.1f} ms, "
                f"p99 {r['save_p99_ms']:.2f} ms, longest wait for the lock "
                f"{r['wait_max_ms']:.1f} ms; saves with no sweep ({ALONE:g} s): longest "
                f"{r['alone_max_ms']:.1f} ms"
            )
        o, n = results["old"], results["new"]
        print(
            f"new vs old: longest save {n['save_max_ms']:.1f} vs {o['save_max_ms']:.1f} ms = "
            f"{n['save_max_ms'] / o['save_max_ms']:.3f}x; longest lock hold "
            f"{n['hold_max_ms']:.1f} vs {o['hold_max_ms']:.1f} ms = "
            f"{n['hold_max_ms'] / o['hold_max_ms']:.3f}x"
        )
        t0 = time.perf_counter()
        old.kept_bytes(KINDS)
        scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        new.kept_bytes(KINDS)
        kept = time.perf_counter() - t0
        print(f"kept_bytes: scan {scan * 1e3:.1f} ms, running total {kept * 1e3:.3f} ms")
        worst = max(n["save_max_ms"], n["alone_max_ms"])
        verdict = "PASS" if worst <= 20 else "FAIL"
        print(f"{verdict}: longest save {worst:.1f} ms, sweep or not (target <= 20 ms)")
        old.close()
        new.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
