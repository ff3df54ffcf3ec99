"""The ledger of records retention removed: one small row per id, so a later request hears
"expired, and this is how it ended" (404 `expired`) instead of a bare "no such record",
and an expired id is refused instead of running a second time.

The idea of the session and job tombstones, in one SQLite file (stdlib) rather than one file
per id: retention removes thousands of records, and their tombstones must not cost a disk
block each. Rows are dropped `keep` seconds after the removal, or sooner, oldest first, when
the file would take more than half the retention cap.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from jupyter_remote.protocol.errors import NotFound

KEPT = ("status", "returncode", "started_at", "finished_at", "tenant")  # from each record
FIELDS = (*KEPT, "expired_at")


class Ledger:
    """DATA_DIR/expired.sqlite: (kind, id) -> how the record ended and when it was removed."""

    def __init__(self, path: str, keep: float) -> None:
        self.path = path
        self.keep = keep
        self._lock = threading.Lock()
        # rollback journal, not WAL: writes come in one batch per pass, and a WAL file would
        # stay at its high-water mark on a disk this very ledger helps to bound
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA auto_vacuum = FULL")  # a new file gives freed pages back
        self._db.execute("PRAGMA cache_size = -256")  # KiB: looked up only on a 404 or a claim
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS expired (kind TEXT NOT NULL, id TEXT NOT NULL, "
            "status TEXT, returncode INTEGER, started_at REAL, finished_at REAL, "
            "expired_at REAL NOT NULL, PRIMARY KEY (kind, id)) WITHOUT ROWID"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS expired_at ON expired (expired_at)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(expired)")}
        if "tenant" not in columns:  # a ledger of an agent from before tenants: the operator's
            self._db.execute("ALTER TABLE expired ADD COLUMN tenant TEXT")

    def add(self, kind: str, records: dict[str, dict]) -> None:
        """Written before the records are removed (one transaction): a crash in between
        leaves both, never neither."""
        now = time.time()
        rows = [(kind, rid, *(r.get(f) for f in KEPT), now) for rid, r in records.items()]
        with self._lock, self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO expired (kind, id, {', '.join(FIELDS)}) "
                f"VALUES ({', '.join('?' * (len(FIELDS) + 2))})",
                rows,
            )

    def get(self, kind: str, record_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(FIELDS)} FROM expired WHERE kind = ? AND id = ?",
                (kind, record_id),
            ).fetchone()
        return dict(zip(FIELDS, row, strict=True)) if row else None

    def refuse(self, kind: str, record_id: str, what: str) -> None:
        """404 `expired` with the record's outcome, if retention removed it."""
        gone = self.get(kind, record_id)
        if gone is not None:
            raise NotFound(
                f"{what} {record_id!r} finished and was removed by retention "
                f"(status {gone['status']}); its record and output are gone",
                reason="expired",
                **{f"{kind}_id": record_id, "kind": kind, **gone},
            )

    def prune(self, most_bytes: int = 0) -> int:
        """Forget removals older than the keep time, and the oldest while the file is over
        `most_bytes` (back to half of it); those ids may then be used again."""
        with self._lock, self._db:
            dropped = self._db.execute(
                "DELETE FROM expired WHERE expired_at < ?", (time.time() - self.keep,)
            ).rowcount
        size = self.disk_bytes()
        if most_bytes and size > most_bytes:
            count = self.count()
            with self._lock, self._db:
                dropped += self._db.execute(
                    "DELETE FROM expired WHERE (kind, id) IN "
                    "(SELECT kind, id FROM expired ORDER BY expired_at LIMIT ?)",
                    (count - int(count * most_bytes / 2 / size),),
                ).rowcount
        return dropped

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM expired").fetchone()[0]

    def disk_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(self.path + suffix).st_blocks * 512
            except FileNotFoundError:
                pass
        return total

    def close(self) -> None:
        with self._lock:
            self._db.close()
