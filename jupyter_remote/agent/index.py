"""An index of the finished executions on disk: when each started and ended, and what it
takes on disk, read once per record. Listings page through it and retention picks the
oldest from it, without reading every record's file on every request.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass

from jupyter_remote.agent.state import read_json
from jupyter_remote.protocol.common import EXECUTION_FINAL


def disk_bytes(path: str) -> int:
    """What a record's directory takes on disk (blocks, as `du` counts), itself included."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in (top, *(os.path.join(top, f) for f in files)):
            try:
                total += os.lstat(name).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


@dataclass(frozen=True)
class Done:
    """A finished record as the index keeps it."""

    started_at: float
    finished_at: float
    bytes: int
    tenant: str | None = None  # whose it is (tenants.py): listings show a tenant its own


class ExecutionIndex:
    """DATA_DIR/executions/*: finished ones are read once, then only their summary is kept."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.done: dict[str, Done] = {}
        self._lock = threading.Lock()

    def refresh(self, running) -> dict[str, Done]:
        """Pick up records finished since the last call; forget ones removed by hand."""
        names = {n for n in os.listdir(self.root) if not n.startswith(".")}
        with self._lock:
            for gone in set(self.done) - names:
                del self.done[gone]
            new = names - set(self.done)
        for name in new:
            if name in running:
                continue
            meta = read_json(os.path.join(self.root, name, "meta.json"))
            if not meta or meta.get("status") not in EXECUTION_FINAL:
                continue
            started = meta.get("started_at") or 0.0
            done = Done(
                started,
                meta.get("finished_at") or started,
                disk_bytes(os.path.join(self.root, name)),
                meta.get("tenant"),
            )
            with self._lock:
                self.done[name] = done
        with self._lock:
            return dict(self.done)

    def clear_trash(self) -> None:
        """Records whose removal a crash cut short (their ids are in the ledger already)."""
        for name in os.listdir(self.root):
            if name.startswith(".expired-"):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def forget(self, execution_id: str) -> None:
        with self._lock:
            self.done.pop(execution_id, None)
