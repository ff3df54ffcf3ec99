"""Reused threads (jupyter_remote.util.workers): pure logic with real threads."""

from __future__ import annotations

import threading

from jupyter_remote.util.workers import Workers


def test_an_idle_thread_is_reused_and_a_busy_one_never_waited_for():
    workers = Workers("t")
    first, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def blocking():
        seen.append(threading.get_ident())
        first.set()
        release.wait(5)

    workers.run(blocking)
    assert first.wait(5)
    second = threading.Event()
    workers.run(lambda: (seen.append(threading.get_ident()), second.set()))
    assert second.wait(5)  # ran while the first job still blocks: a thread of its own
    assert seen[0] != seen[1]
    release.set()
    for _ in range(50):  # both go back to idle
        if len(workers._idle) == 2:
            break
        threading.Event().wait(0.02)
    again = threading.Event()
    workers.run(lambda: (seen.append(threading.get_ident()), again.set()), "named")
    assert again.wait(5) and seen[2] in seen[:2]  # no third thread
