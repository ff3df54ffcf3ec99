"""Where the server keeps what must survive its own restart: jobs, executions, nodes, sessions."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time

from jupyter_remote_server.store.retention import (
    COLUMNS,
    TRIGGERS,
    StoreLock,
    columns_of,
    outcome,
)

log = logging.getLogger("jupyter_remote_server")
CHECKPOINT_EVERY = 1.0  # seconds between two copies of the WAL into the file


class JobStore:
    """The interface; swap it with `c.RemoteApp.job_store_class`."""

    batch = 20  # records retention reads or removes at a time (one short hold of the store)

    def save(self, kind: str, key: str, record: dict) -> None:
        raise NotImplementedError

    def reserve(self, kind: str, key: str, record: dict) -> bool:
        """Save `record` only if `key` is new, atomically; False when it existed already.

        This is what makes an id run once even when two servers share one store.
        """
        raise NotImplementedError

    def delete(self, kind: str, key: str) -> None:
        raise NotImplementedError

    def load(self, kind: str) -> list[dict]:
        raise NotImplementedError

    # -- executions and jobs: kept in memory only while live (records.py) ---------------
    def get(self, kind: str, key: str) -> dict | None:
        """One record, or None."""
        raise NotImplementedError

    def load_live(self, kind: str) -> list[dict]:
        """The records the server keeps in memory: running, unsettled, reconciling."""
        raise NotImplementedError

    def page(
        self,
        kind: str,
        limit: int,
        after: tuple[float, str] | None,
        owner: str | None = None,
        user: str | None = None,
    ) -> list[dict]:
        """Up to `limit` records newest first by (time, key), older than `after`; with
        `user`, only that user's and those of no recorded user."""
        raise NotImplementedError

    def of_notebook(self, kind: str, path: str, limit: int) -> list[dict]:
        """Up to `limit` records filed under notebook `path`, newest first."""
        raise NotImplementedError

    def ended(self, kinds: tuple[str, ...], limit: int) -> list[tuple[str, str, float, int]]:
        """The `limit` records that ended first: (kind, key, end time, bytes)."""
        raise NotImplementedError

    def kept_bytes(self, kinds: tuple[str, ...]) -> int:
        """Bytes the records of these kinds and the expired ids' rows take."""
        raise NotImplementedError

    def expire(self, kind: str, keys: list[str]) -> list[dict]:
        """Remove records for good, each leaving a small expired row; the removed."""
        raise NotImplementedError

    def expired(self, kind: str, key: str) -> dict | None:
        """How a record retention removed had ended, while its expired row is kept."""
        raise NotImplementedError

    def prune_expired(self, before: float, most_bytes: int) -> int:
        """Forget expired rows written before `before`, and the oldest beyond `most_bytes`."""
        raise NotImplementedError

    def give_way(self) -> None:
        """Between two batches of a background pass: let a waiting caller have the store."""

    def close(self) -> None:
        """Release the storage."""


class SQLiteJobStore(JobStore):
    """Records as JSON in one SQLite file (stdlib sqlite3, WAL), keyed by kind and id."""

    KINDS = ("job", "execution", "node", "kernel_session")

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._lock = StoreLock()
        # the file holds joined agents' tokens: only this user reads it (an older 0644 one
        # is tightened); SQLite gives its -wal and -shm files the database file's mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._private()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._private()
        self._db.execute("PRAGMA synchronous=NORMAL")
        # no checkpoint (an fsync: tens of ms) in a save's commit: one thread does them
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, "
            "body TEXT NOT NULL, updated REAL DEFAULT (julianday('now')), "
            "PRIMARY KEY (kind, key))"
        )
        self._add_columns()
        self._add_totals()
        self._closed = threading.Event()
        self._checkpoints = threading.Thread(
            target=self._checkpoint, name="jupyter-remote-store-checkpoint", daemon=True
        )
        self._checkpoints.start()

    def _add_columns(self) -> None:
        """Listing and retention columns (records.py), added to an older file and filled."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
        missing = [name for name, _ in COLUMNS if name not in have]
        for name, sql_type in COLUMNS:
            if name in missing:
                self._db.execute(f"ALTER TABLE records ADD COLUMN {name} {sql_type}")
        if missing:
            rows = self._db.execute("SELECT kind, key, body FROM records").fetchall()
            self._db.executemany(
                f"UPDATE records SET {', '.join(f'{n} = ?' for n, _ in COLUMNS)} "
                "WHERE kind = ? AND key = ?",
                [
                    (*columns_of(kind, json.loads(body), body), kind, key)
                    for kind, key, body in rows
                ],
            )
        self._db.execute("CREATE INDEX IF NOT EXISTS records_page ON records (kind, at, key)")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS records_owner ON records (kind, owner, at, key)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS records_ended ON records (ended, kind)")
        self._db.execute("CREATE INDEX IF NOT EXISTS records_user ON records (kind, user, at, key)")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS records_notebook ON records (kind, notebook, at, key)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS records_live ON records (kind, live)")
        # expired ids apart: small rows, one index, none of the listing columns
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS expired (kind TEXT NOT NULL, key TEXT NOT NULL, "
            "body TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS expired_at ON expired (at)")

    def _add_totals(self) -> None:
        """The running totals: counted once when a file first gets them, then kept."""
        self._db.execute("BEGIN IMMEDIATE")  # a second server opening the file waits
        try:
            have = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if "totals" not in have:
                self._db.execute(
                    "CREATE TABLE totals (tbl TEXT NOT NULL, kind TEXT NOT NULL, "
                    "bytes INTEGER NOT NULL, rows INTEGER NOT NULL, PRIMARY KEY (tbl, kind)) "
                    "WITHOUT ROWID"
                )
                self._db.execute(
                    "INSERT INTO totals SELECT 'records', kind, coalesce(sum(size), 0), "
                    "count(*) FROM records GROUP BY kind"
                )
                self._db.execute(
                    "INSERT INTO totals SELECT 'expired', kind, sum(length(body)), count(*) "
                    "FROM expired GROUP BY kind"
                )
            for name, body in TRIGGERS.items():
                if name not in have:
                    self._db.execute(f"CREATE TRIGGER {name} {body}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def totals(self, table: str) -> tuple[int, int]:
        """(bytes, rows) of all kinds in `table` ("records" or "expired"), from the totals."""
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(sum(bytes), 0), coalesce(sum(rows), 0) FROM totals WHERE tbl = ?",
                (table,),
            ).fetchone()
        return int(row[0]), int(row[1])

    def _checkpoint(self) -> None:
        """Copy the WAL into the file on a connection of its own, beside the writes (WAL
        lets a checkpoint and a writer run at once): a save never waits for its fsync."""
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            while not self._closed.wait(CHECKPOINT_EVERY):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # the next round tries again
                    log.warning("store checkpoint failed: %s", e)
        finally:
            db.close()

    def _private(self) -> None:
        """Mode 0600 for the database file and the -wal/-shm files beside it."""
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                os.chmod(name, 0o600)
            except FileNotFoundError:
                pass

    _INSERT = (
        f"INSERT INTO records (kind, key, body, {', '.join(n for n, _ in COLUMNS)}) "
        f"VALUES (?, ?, ?{', ?' * len(COLUMNS)})"
    )

    def save(self, kind: str, key: str, record: dict) -> None:
        body = json.dumps(record, separators=(",", ":"))
        update = ", ".join(f"{n} = excluded.{n}" for n, _ in COLUMNS)
        with self._lock:
            self._db.execute(
                f"{self._INSERT} ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body, "
                f"updated = julianday('now'), {update}",
                (kind, key, body, *columns_of(kind, record, body)),
            )

    def reserve(self, kind: str, key: str, record: dict) -> bool:
        body = json.dumps(record, separators=(",", ":"))
        with self._lock:
            cursor = self._db.execute(
                f"{self._INSERT} ON CONFLICT(kind, key) DO NOTHING",
                (kind, key, body, *columns_of(kind, record, body)),
            )
        return cursor.rowcount == 1

    def delete(self, kind: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))

    def load(self, kind: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM records WHERE kind = ? ORDER BY rowid", (kind,)
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def get(self, kind: str, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM records WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def load_live(self, kind: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM records WHERE kind = ? AND live = 1 ORDER BY rowid", (kind,)
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def page(
        self,
        kind: str,
        limit: int,
        after: tuple[float, str] | None,
        owner: str | None = None,
        user: str | None = None,
    ) -> list[dict]:
        where, args = ["kind = ?"], [kind]
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if user is not None:
            where.append("(user = ? OR user IS NULL)")
            args.append(user)
        if after is not None:
            where.append("(at, key) < (?, ?)")  # a row value: one seek in the index
            args += [after[0], after[1]]
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM records WHERE {' AND '.join(where)} "
                "ORDER BY at DESC, key DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def of_notebook(self, kind: str, path: str, limit: int) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM records WHERE kind = ? AND notebook = ? "
                "ORDER BY at DESC, key DESC LIMIT ?",
                (kind, path, limit),
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def ended(self, kinds: tuple[str, ...], limit: int) -> list[tuple[str, str, float, int]]:
        marks = ", ".join("?" * len(kinds))
        with self._lock:  # oldest first down the index, never a sort of every record
            return self._db.execute(
                "SELECT kind, key, ended, size FROM records INDEXED BY records_ended "
                f"WHERE ended IS NOT NULL "
                f"AND live = 0 AND kind IN ({marks}) ORDER BY ended LIMIT ?",
                (*kinds, limit),
            ).fetchall()

    def kept_bytes(self, kinds: tuple[str, ...]) -> int:
        marks = ", ".join("?" * len(kinds))
        with self._lock:  # the running totals: a few rows, never a scan
            row = self._db.execute(
                "SELECT coalesce(sum(bytes), 0) FROM totals WHERE (tbl = 'records' "
                f"AND kind IN ({marks})) OR tbl = 'expired'",
                kinds,
            ).fetchone()
        return int(row[0])

    def give_way(self) -> None:
        self._lock.give_way()

    def expire(self, kind: str, keys: list[str]) -> list[dict]:
        removed: list[dict] = []
        for start in range(0, len(keys), self.batch):  # one short transaction a batch
            if start:
                self.give_way()
            removed += self._expire(kind, keys[start : start + self.batch])
        return removed

    def _expire(self, kind: str, keys: list[str]) -> list[dict]:
        removed = []
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
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
                    self._db.execute(  # an upsert: REPLACE would skip the delete trigger
                        "INSERT INTO expired VALUES (?, ?, ?, ?) ON CONFLICT (kind, key) "
                        "DO UPDATE SET body = excluded.body, at = excluded.at",
                        (kind, key, json.dumps(stone, separators=(",", ":")), now),
                    )
                    self._db.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
                    removed.append(record)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return removed

    def expired(self, kind: str, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM expired WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def prune_expired(self, before: float, most_bytes: int) -> int:
        dropped = self._drop_oldest("at < ?", (before,), None)
        size, count = self.totals("expired")
        if most_bytes and size > most_bytes:  # oldest first, back to half the bound
            dropped += self._drop_oldest("1", (), count - int(count * most_bytes / 2 / size))
        return dropped

    def _drop_oldest(self, where: str, args: tuple, most: int | None) -> int:
        """Delete the oldest expired rows matching `where` (at most `most`), a batch a time."""
        dropped = 0
        while most is None or dropped < most:
            if dropped:
                self.give_way()
            n = self.batch if most is None else min(self.batch, most - dropped)
            with self._lock:
                done = self._db.execute(
                    "DELETE FROM expired WHERE (kind, key) IN (SELECT kind, key FROM expired "
                    f"WHERE {where} ORDER BY at LIMIT ?)",
                    (*args, n),
                ).rowcount
            dropped += done
            if done < n:
                break
        return dropped

    def close(self) -> None:
        self._closed.set()
        self._checkpoints.join()
        with self._lock:
            self._db.close()
