"""Answers that many open panels poll, encoded once and shared.

Each open Lab panel asks for the nodes and the sessions every two seconds; at 200 nodes and
1,350 sessions those answers take ~8 and ~26 ms of the event loop to build, and cells wait
behind them (issue 19: ten panels made cells 1.6-1.8x slower to start). An answer is built
at most once per `TTL` seconds per key, and requests meanwhile share it (also while it is
being built). Keys carry a version that moves when something is added or removed, so that
shows at once; states and samples may be up to TTL late, as the panel's own poll is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Hashable

TTL = 1.0


class SharedAnswers:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._built: dict[Hashable, tuple[float, bytes]] = {}
        self._building: dict[Hashable, asyncio.Future] = {}

    async def encoded(self, key: Hashable, build: Callable[[], Awaitable[object]]) -> bytes:
        """The JSON of `await build()`, from the last build of `key` if it is recent."""
        built = self._built.get(key)
        if built is not None and time.monotonic() - built[0] < self.ttl:
            return built[1]
        pending = self._building.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._build(key, build))
            self._building[key] = pending
            pending.add_done_callback(lambda _: self._building.pop(key, None))
        return await asyncio.shield(pending)

    async def _build(self, key: Hashable, build: Callable[[], Awaitable[object]]) -> bytes:
        data = json.dumps(await build()).encode()
        now = time.monotonic()
        self._built = {k: v for k, v in self._built.items() if now - v[0] < self.ttl}
        self._built[key] = (now, data)
        return data
