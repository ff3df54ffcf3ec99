"""The runner's child processes: one reaper for every wait status, and process groups.

The runner is PID 1 in its container, so orphans are ours to reap: one thread waits on
``waitpid(-1)`` and hands each status to whoever watches that pid.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time


def returncode_of(status: int) -> int:
    """A wait status as a shell would report it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


def killpg_quietly(pgid: int, signum: int) -> None:
    """Signal a process group that may be gone already."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Reaper:
    """Collects every child's wait status (``waitpid(-1)``) and hands it to whoever waits."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiters = {}
        self._early = {}  # pid -> (status, time): reaped before anyone asked (or an orphan)
        self._kick = threading.Event()
        threading.Thread(target=self._loop, name="reaper", daemon=True).start()

    def watch(self, pid: int, callback) -> None:
        with self._lock:
            early = self._early.pop(pid, None)
            if early is None:
                self._waiters[pid] = callback
        self._kick.set()
        if early is not None:
            callback(early[0])

    def _loop(self):
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self._kick.wait(1.0)
                self._kick.clear()
                continue
            except InterruptedError:
                continue
            with self._lock:
                callback = self._waiters.pop(pid, None)
                if callback is None:
                    now = time.monotonic()
                    self._early[pid] = (status, now)
                    for old in [p for p, (_, t) in self._early.items() if now - t > 60]:
                        del self._early[old]
            if callback is not None:
                try:
                    callback(status)
                except Exception:  # noqa: BLE001 - the reaper must never die
                    pass


class Child:
    """A process started by the runner; ``wait()`` returns its returncode (from the reaper)."""

    def __init__(self, reaper: Reaper, proc: subprocess.Popen):
        self.proc = proc
        self.pid = proc.pid
        self.returncode = None
        self._done = threading.Event()
        reaper.watch(proc.pid, self._reaped)

    def _reaped(self, status: int) -> None:
        self.returncode = returncode_of(status)
        self.proc.returncode = self.returncode  # so Popen never waits for it itself
        self._done.set()

    def wait(self, timeout=None):
        self._done.wait(timeout)
        return self.returncode

    @property
    def alive(self) -> bool:
        return not self._done.is_set()
