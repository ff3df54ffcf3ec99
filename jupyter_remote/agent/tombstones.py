"""What the idle reaper removed: one small file per session id, so a later request hears
"removed for being idle, its files are gone" instead of a bare "no such session".
"""

from __future__ import annotations

import os
import time

from jupyter_remote.agent.state import read_json, write_json

KEEP_SECONDS = 7 * 24 * 3600


class Tombstones:
    """DATA_DIR/sessions/removed/ID.json, each kept `keep` seconds after the removal."""

    def __init__(self, root: str, keep: float = KEEP_SECONDS) -> None:
        self.root = root
        self.keep = keep
        os.makedirs(root, exist_ok=True)

    def _path(self, session_id: str) -> str:
        return os.path.join(self.root, f"{session_id}.json")

    def add(self, session_id: str, **record: object) -> None:
        write_json(self._path(session_id), {"session_id": session_id, **record})

    def get(self, session_id: str) -> dict | None:
        """The record of a removal still within its keep time, or None."""
        record = read_json(self._path(session_id))
        if record is None or time.time() - record.get("removed_at", 0) > self.keep:
            return None
        return record

    def clear(self, session_id: str) -> None:
        try:
            os.unlink(self._path(session_id))
        except FileNotFoundError:
            pass

    def prune(self) -> int:
        """Forget removals older than the keep time; returns how many were dropped."""
        dropped = 0
        cutoff = time.time() - self.keep
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            record = read_json(path) if name.endswith(".json") else None
            if record is None or record.get("removed_at", 0) < cutoff:
                try:
                    os.unlink(path)
                    dropped += 1
                except FileNotFoundError:
                    pass
        return dropped
