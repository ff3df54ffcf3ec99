"""The server's SQLite store at scale: a running byte total instead of a scan, retention in
small transactions, checkpoints off the save path (issue 19). No Docker, no server."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest

from jupyter_remote.util.retention import Policy
from jupyter_remote_server.store import jobstore
from jupyter_remote_server.store.jobstore import SQLiteJobStore
from jupyter_remote_server.store.retention import KINDS, TRIGGERS, Retention, StoreLock

NOW = time.time()


@pytest.fixture(autouse=True)
def _now():
    """Times relative to the test's start, not to collection (a whole run comes first)."""
    global NOW
    NOW = time.time()


def execution(i: int, ended_ago: float | None, pad: int = 0) -> dict:
    record = {"execution_id": f"x-{i:04d}", "created_at": NOW - 1000 + i, "pad": "p" * pad}
    if ended_ago is None:
        return {**record, "status": "running"}
    return {**record, "status": "completed", "returncode": 0, "finished_at": NOW - ended_ago}


def scanned(store: SQLiteJobStore) -> int:
    """What kept_bytes was before issue 19: a scan of every record and expired row."""
    db = sqlite3.connect(store.path)
    try:
        kept = db.execute(
            "SELECT coalesce(sum(size), 0) FROM records WHERE kind IN ('execution', 'job')"
        ).fetchone()[0]
        return kept + db.execute("SELECT coalesce(sum(length(body)), 0) FROM expired").fetchone()[0]
    finally:
        db.close()


@pytest.fixture
def store(tmp_path):
    store = SQLiteJobStore(str(tmp_path / "store.sqlite"))
    yield store
    store.close()


def test_the_byte_total_equals_a_scan_after_saves_deletes_expiry_and_a_reopen(store):
    for i in range(60):
        store.save("execution", f"x-{i:04d}", execution(i, 3600.0 + i))
    store.save("node", "n1", {"token": "t" * 500})  # another kind: not counted
    assert store.kept_bytes(KINDS) == scanned(store) > 60 * 50
    store.save("execution", "x-0001", execution(1, 10.0, pad=3000))  # grows in place
    store.save("execution", "x-0002", execution(2, None))  # shrinks, live again
    assert store.reserve("execution", "x-0003", execution(3, 1.0)) is False
    assert store.reserve("execution", "x-new", execution(99, None)) is True
    store.delete("execution", "x-0004")
    store.delete("execution", "absent")
    before = store.kept_bytes(KINDS)
    assert before == scanned(store)
    removed = store.expire("execution", [f"x-{i:04d}" for i in range(10, 40)] + ["x-0002"])
    assert len(removed) == 30  # x-0002 is running: kept
    assert store.kept_bytes(KINDS) == scanned(store) < before
    assert store.expire("execution", ["x-0010"]) == []  # gone already: nothing counted twice
    assert store.totals("expired")[1] == 30
    assert store.prune_expired(NOW + 10, 0) == 30
    assert store.totals("expired") == (0, 0)
    total = store.kept_bytes(KINDS)
    assert total == scanned(store)
    store.close()
    again = SQLiteJobStore(store.path)
    try:
        assert again.kept_bytes(KINDS) == total == scanned(again)
    finally:
        again.close()


def test_an_older_file_without_totals_is_counted_once_at_open(tmp_path):
    path = str(tmp_path / "old.sqlite")
    store = SQLiteJobStore(path)
    for i in range(25):
        store.save("execution", f"x-{i:04d}", execution(i, 7200.0, pad=i * 10))
    store.expire("execution", ["x-0000", "x-0001"])
    total = store.kept_bytes(KINDS)
    store.close()
    db = sqlite3.connect(path)  # as a file written before issue 19 is
    db.execute("DROP TABLE totals")
    for name in TRIGGERS:
        db.execute(f"DROP TRIGGER {name}")
    db.commit()
    db.close()
    store = SQLiteJobStore(path)
    try:
        assert store.kept_bytes(KINDS) == total == scanned(store)
        store.save("execution", "x-0005", execution(5, 7200.0, pad=2000))  # triggers back
        assert store.kept_bytes(KINDS) == scanned(store) > total
    finally:
        store.close()


def test_a_sweep_removes_the_right_records_in_small_batches_and_lets_a_save_in(store):
    store.batch = 7
    for i in range(100):  # x-0000..x-0059 older than the max age, the rest young
        store.save("execution", f"x-{i:04d}", execution(i, 10_000.0 - i if i < 60 else 100.0))
    store.save("execution", "x-0200", execution(200, None))  # running: kept
    reads, writes, saved = [], [], threading.Event()
    ended, expire = store.ended, store._expire

    def counted_ended(kinds, limit):
        reads.append(limit)
        return ended(kinds, limit)

    def counted_expire(kind, keys):
        out = expire(kind, keys)
        writes.append(len(keys))
        if len(writes) == 1:  # between two batches: the store is free for a save
            assert saved.wait(10)
        return out

    store.ended, store._expire = counted_ended, counted_expire
    forgotten = []
    policy = Policy(max_age=5000.0, min_age=50.0)
    retention = Retention(store, policy, lambda *k: forgotten.append(k))
    sweep = threading.Thread(target=lambda: forgotten.append(retention.sweep()))
    sweep.start()
    while not writes:
        time.sleep(0.005)
    t0 = time.perf_counter()
    store.save("execution", "x-0300", execution(300, None))  # mid-sweep
    waited = time.perf_counter() - t0
    saved.set()
    sweep.join(30)
    assert waited < 1.0 and store.get("execution", "x-0300") is not None
    assert forgotten[-1]["removed"] == 60
    assert sorted(k for _, k in forgotten[:-1]) == [f"x-{i:04d}" for i in range(60)]
    assert max(reads) <= 7 and max(writes) <= 7 and sum(writes) == 60, (reads, writes)
    left = {r["execution_id"] for r in store.load("execution")}
    assert left == {f"x-{i:04d}" for i in range(60, 100)} | {"x-0200", "x-0300"}
    assert store.expired("execution", "x-0000")["status"] == "completed"
    assert store.kept_bytes(KINDS) == scanned(store)


def test_a_size_bound_sweep_removes_the_oldest_across_batches_until_under_the_bound(store):
    store.batch = 5
    for i in range(40):  # sizes differ, so where it stops says the count was right
        store.save("execution", f"x-{i:04d}", execution(i, 1000.0 - i, pad=900 + 37 * i))
    total = store.kept_bytes(KINDS)
    sizes = [r[3] for r in store.ended(KINDS, 40)]  # oldest first
    bound = total // 2
    due = next(k for k in range(41) if total - sum(sizes[:k]) <= bound)
    policy = Policy(max_age=0, max_bytes=bound, min_age=0.0)
    result = Retention(store, policy, lambda *k: None).sweep()
    assert result["bytes_before"] == total and result["removed"] == due > store.batch
    left = sorted(r["execution_id"] for r in store.load("execution"))
    assert left == [f"x-{i:04d}" for i in range(due, 40)]
    assert store.kept_bytes(KINDS) == scanned(store)


def test_pruning_many_expired_rows_goes_a_batch_at_a_time(store):
    store.batch = 4
    for i in range(30):
        store.save("execution", f"x-{i:04d}", execution(i, 9000.0))
    assert len(store.expire("execution", [f"x-{i:04d}" for i in range(30)])) == 30
    breaks = []
    store.give_way = lambda: breaks.append(1)
    size, count = store.totals("expired")
    assert count == 30 and store.prune_expired(0.0, size - 1) == 16  # to half: the oldest
    assert len(breaks) == 3  # 4 deletes of 4 rows
    assert store.expired("execution", "x-0015") is None
    assert store.expired("execution", "x-0016")["status"] == "completed"
    assert store.totals("expired")[1] == 14 and store.kept_bytes(KINDS) == scanned(store)
    assert store.prune_expired(time.time() + 1, 0) == 14 and store.totals("expired") == (0, 0)


def test_retentions_read_walks_the_end_time_index_and_never_sorts(store):
    plan = store._db.execute(
        "EXPLAIN QUERY PLAN SELECT kind, key, ended, size FROM records INDEXED BY "
        "records_ended WHERE ended IS NOT NULL AND live = 0 AND kind IN (?, ?) "
        "ORDER BY ended LIMIT ?",
        ("execution", "job", 50),
    ).fetchall()
    assert "records_ended" in str(plan) and "TEMP B-TREE" not in str(plan), plan
    for i in range(5):
        store.save("execution", f"x-{i:04d}", execution(i, 100.0 * (5 - i)))
    assert [k for _, k, _, _ in store.ended(KINDS, 3)] == ["x-0000", "x-0001", "x-0002"]


def test_a_waiting_caller_gets_the_lock_before_the_next_background_batch():
    lock, order, waiting = StoreLock(), [], threading.Event()

    def caller():
        waiting.set()
        with lock:
            order.append("save")

    with lock:
        thread = threading.Thread(target=caller)
        thread.start()
        assert waiting.wait(5)
        while not lock.waiting:
            time.sleep(0.001)
    lock.give_way()
    with lock:
        order.append("batch")
    thread.join(5)
    assert order == ["save", "batch"]


def test_checkpoints_run_off_the_save_path_and_keep_the_wal_from_growing(tmp_path, monkeypatch):
    monkeypatch.setattr(jobstore, "CHECKPOINT_EVERY", 0.05)
    store = SQLiteJobStore(str(tmp_path / "wal.sqlite"))
    try:
        assert store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        sizes = []
        for round_ in range(3):
            for i in range(300):
                store.save("execution", f"x-{round_}-{i}", execution(i, 10.0, pad=2000))
            sizes.append(os.path.getsize(store.path + "-wal"))
            time.sleep(0.5)  # the checkpoint thread copies the WAL into the file
        assert sizes[2] < 1.5 * sizes[0], sizes  # reused from its start, not appended to
    finally:
        store.close()
    assert not store._checkpoints.is_alive()
