"""The gateway's JSONL log: batched writes, bounded memory, size rotation, reopen on SIGHUP."""

from __future__ import annotations

import gzip
import os
import shutil
import threading


class RotatingJsonl:
    """Appends lines in batches; rotates at `max_bytes` keeping `backups` files (.gz if asked).

    Memory stays bounded: a batch is written out as soon as it reaches `batch_bytes`.
    `reopen()` (on SIGHUP) starts a new file where logrotate moved the old one away.
    """

    def __init__(
        self,
        path: str,
        *,
        max_bytes: int = 100 << 20,
        backups: int = 5,
        compress: bool = False,
        batch_bytes: int = 1 << 20,
    ) -> None:
        self.path = os.path.abspath(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.compress = compress
        self.batch_bytes = batch_bytes
        self._buf = bytearray()
        self._compressing: list[threading.Thread] = []
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self._fd).st_size

    def append(self, line: bytes) -> None:
        """Queue one line (with its newline); written once the batch is full or on flush()."""
        self._buf += line
        if len(self._buf) >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data, self._buf = self._buf, bytearray()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)
        if self.max_bytes and self.size >= self.max_bytes:
            self.rotate()

    def rotate(self) -> None:
        """path -> path.1 -> path.2 ...; the oldest beyond `backups` is deleted."""
        os.close(self._fd)
        for suffix in ("", ".gz"):
            oldest = f"{self.path}.{self.backups}{suffix}"
            if os.path.exists(oldest):
                os.unlink(oldest)
        for i in range(self.backups - 1, 0, -1):
            for suffix in ("", ".gz"):
                src = f"{self.path}.{i}{suffix}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i + 1}{suffix}")
        if self.backups:
            os.replace(self.path, f"{self.path}.1")
            if self.compress:
                thread = threading.Thread(target=_gzip, args=(f"{self.path}.1",), daemon=True)
                thread.start()
                self._compressing.append(thread)
        else:
            os.unlink(self.path)
        self._open()

    def reopen(self) -> None:
        """After logrotate moved the file: write what we hold, then start a new file."""
        self.flush()
        os.close(self._fd)
        self._open()

    def close(self) -> None:
        self.flush()
        os.fsync(self._fd)
        os.close(self._fd)
        for thread in self._compressing:
            thread.join()


def _gzip(path: str) -> None:
    with open(path, "rb") as src, gzip.open(f"{path}.gz.tmp", "wb", compresslevel=3) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(f"{path}.gz.tmp", f"{path}.gz")
    os.unlink(path)
