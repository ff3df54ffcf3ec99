"""The agent's timeouts: one thread for all deadlines (pure logic, real threads and clock)."""

from __future__ import annotations

import threading
import time

from jupyter_remote.agent.deadlines import COMPACT_AT, Deadlines


def test_actions_fire_in_time_order_and_cancelled_ones_never():
    deadlines = Deadlines()
    fired: list[str] = []
    done = threading.Event()

    def action(name):
        def fire():
            fired.append(name)
            if name == "last":
                done.set()

        return fire

    deadlines.arm(0.3, action("last"))
    deadlines.arm(0.1, action("first"))  # earlier than the one waited for: wakes the thread
    deadlines.arm(0.2, action("cancelled")).cancel()
    deadlines.arm(0.15, action("second"))
    assert done.wait(5)
    time.sleep(0.05)
    assert fired == ["first", "second", "last"]


def test_cancelled_deadlines_do_not_pile_up():
    deadlines = Deadlines()
    for _ in range(COMPACT_AT * 3):
        deadlines.arm(1800, lambda: None).cancel()
    assert len(deadlines._heap) <= COMPACT_AT + 1
