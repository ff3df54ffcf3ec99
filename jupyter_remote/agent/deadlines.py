"""Execution timeouts on one thread, not a threading.Timer (a new thread) per cell.

Starting and cancelling a Timer thread cost ~0.2 ms of a cell that takes a few ms; here arming
is a heap push and cancelling sets a flag. Every cell has a timeout (the agent's default is
30 minutes), so deadlines nearly always arrive in order and the thread is seldom woken.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

COMPACT_AT = 1024  # cancelled entries kept in the heap before it is rebuilt without them


class Deadline:
    """One armed action; `cancel()` before it fires and it never does."""

    __slots__ = ("action", "cancelled")

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.action = None  # what it would have done (an execution) is not kept alive


class Deadlines:
    """Runs each armed action on its own short-lived thread once its time has come."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._compact_above = COMPACT_AT

    def arm(self, seconds: float, action: Callable[[], None]) -> Deadline:
        deadline = Deadline(action)
        when = time.monotonic() + max(0.0, seconds)
        with self._cond:
            earliest = not self._heap or when < self._heap[0][0]
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            # a threshold, not "every COMPACT_AT-th push": the thread pops cancelled entries
            # off the top concurrently, so the length may step over any exact multiple
            if len(self._heap) > self._compact_above:
                self._heap = [e for e in self._heap if not e[2].cancelled]
                heapq.heapify(self._heap)
                self._compact_above = max(COMPACT_AT, 2 * len(self._heap))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="deadlines")
                self._thread.start()
            elif earliest:
                self._cond.notify()
        return deadline

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][2].cancelled:
                    if self._heap:
                        heapq.heappop(self._heap)
                    else:
                        self._cond.wait()
                when, _, deadline = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            # the action (a kill) may block on Docker or the runner: not on this thread
            threading.Thread(target=deadline.action, daemon=True, name="timeout").start()
