"""Where the server keeps what must survive its own restart: jobs, executions, nodes, sessions."""

from __future__ import annotations

import json
import os
import sqlite3
import threading


class JobStore:
    """The interface; swap it with `c.RemoteApp.job_store_class`."""

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

    def close(self) -> None:
        """Release the storage."""


class SQLiteJobStore(JobStore):
    """Records as JSON in one SQLite file (stdlib sqlite3, WAL), keyed by kind and id."""

    KINDS = ("job", "execution", "node", "kernel_session")

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # the file holds joined agents' tokens: only this user reads it (an older 0644 one
        # is tightened); SQLite gives its -wal and -shm files the database file's mode
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._private()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._private()
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, "
            "body TEXT NOT NULL, updated REAL DEFAULT (julianday('now')), "
            "PRIMARY KEY (kind, key))"
        )

    def _private(self) -> None:
        """Mode 0600 for the database file and the -wal/-shm files beside it."""
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                os.chmod(name, 0o600)
            except FileNotFoundError:
                pass

    def save(self, kind: str, key: str, record: dict) -> None:
        body = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._db.execute(
                "INSERT INTO records (kind, key, body) VALUES (?, ?, ?) ON CONFLICT(kind, key) "
                "DO UPDATE SET body = excluded.body, updated = julianday('now')",
                (kind, key, body),
            )

    def reserve(self, kind: str, key: str, record: dict) -> bool:
        body = json.dumps(record, separators=(",", ":"))
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO records (kind, key, body) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, key) DO NOTHING",
                (kind, key, body),
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

    def close(self) -> None:
        with self._lock:
            self._db.close()
