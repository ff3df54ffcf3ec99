"""Waking coroutines on an event loop from worker threads, coalescing bursts of changes."""

from __future__ import annotations

import asyncio


class Notifier:
    """Wakes coroutines on one event loop when worker threads report a change."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self._waiters: list[asyncio.Future] = []
        self._pending = False

    def notify(self) -> None:
        """Safe from any thread; many calls before the loop runs cost one wake-up."""
        if self._pending or self.loop is None:
            return
        self._pending = True
        try:
            self.loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop is gone: the agent is shutting down
            self._pending = False

    def _wake(self) -> None:
        self._pending = False
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, timeout: float | None = None) -> None:
        """Until the next notify (or `timeout` seconds); call on the loop."""
        fut = self.loop.create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass
