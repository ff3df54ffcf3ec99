"""Append-only NDJSON event files that live readers tail.

The file is the buffer between a command and its readers: output is on disk before any
reader sees it, a slow reader never holds output in memory, and a reader that goes away
never stops the command. Reattaching later is the same code path as streaming live.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

from jupyter_remote.util.notify import Notifier

READ_CHUNK = 1 << 20


def encode(event: dict) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class EventLog:
    """One execution's events; appended from a worker thread, read on the event loop."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.size = os.fstat(self._fd).st_size
        self.closed = False
        self._changes = Notifier(loop)

    def append(self, event: dict) -> None:
        """Write one event to disk, then let readers know (safe from any thread)."""
        data = encode(event)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)
        self._changes.notify()

    def append_raw(self, data: bytes) -> None:
        """Append lines already encoded as `encode` would (the runner's spool lines)."""
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)
        self._changes.notify()

    def close(self) -> None:
        """No more events: readers finish once they have read everything."""
        if not self.closed:
            os.fsync(self._fd)
            os.close(self._fd)
            self.closed = True
            self._changes.notify()

    async def read(self, offset: int = 0, follow: bool = True) -> AsyncIterator[bytes]:
        """Whole lines from byte `offset`; with `follow`, until the log is closed."""
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while True:
                end = self.size
                while offset < end:
                    chunk = fh.read(min(READ_CHUNK, end - offset))
                    if not chunk:
                        break
                    offset += len(chunk)
                    yield chunk
                if self.closed or not follow:
                    if offset >= self.size:
                        return
                    continue
                if offset >= self.size:
                    await self._changes.wait()


async def read_file(path: str, offset: int = 0) -> AsyncIterator[bytes]:
    """A finished log (from this or an earlier run of the agent), from byte `offset`."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(READ_CHUNK):
            yield chunk
