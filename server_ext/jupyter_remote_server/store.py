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
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS records (kind TEXT NOT NULL, key TEXT NOT NULL, "
            "body TEXT NOT NULL, updated REAL DEFAULT (julianday('now')), "
            "PRIMARY KEY (kind, key))"
        )

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
