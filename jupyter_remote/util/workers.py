"""Threads kept for the next job once theirs ends, never capped.

Starting a thread costs ~0.1-0.2 ms on a busy 2-core host, on the path of every cell (the
agent runs each execution on a thread, the kernel reads each stream on one). Jobs may block
for hours, so there is no limit: a job never waits for a free thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class Workers:
    def __init__(self, name: str) -> None:
        self._name = name
        self._idle: list[queue.SimpleQueue] = []
        self._lock = threading.Lock()

    def run(self, job: Callable[[], None], name: str | None = None) -> None:
        """Run `job` on an idle thread, or a new one; `name` names the thread meanwhile."""
        with self._lock:
            jobs = self._idle.pop() if self._idle else None
        if jobs is None:
            jobs = queue.SimpleQueue()
            threading.Thread(target=self._serve, args=(jobs,), daemon=True).start()
        jobs.put((job, name or self._name))

    def _serve(self, jobs: queue.SimpleQueue) -> None:
        me = threading.current_thread()
        while True:
            job, me.name = jobs.get()
            try:
                job()
            finally:
                me.name = f"{self._name}-idle"
                with self._lock:
                    self._idle.append(jobs)
