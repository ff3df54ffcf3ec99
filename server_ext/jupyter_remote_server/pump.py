"""Bridging a blocking byte stream (requests) onto the event loop, with backpressure."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor

_END = object()


class ThreadPump:
    """Reads a blocking iterator on a worker thread; the coroutine side iterates it.

    At most `depth` chunks wait in memory: a slow reader slows the thread, not the server's
    memory. `close()` stops the thread by closing the underlying stream.
    """

    def __init__(
        self, open_stream: Callable[[], Iterator[bytes]], executor: Executor, depth: int = 32
    ) -> None:
        self._open = open_stream
        self._executor = executor
        self._queue: asyncio.Queue = asyncio.Queue(depth)
        self._loop = asyncio.get_running_loop()
        self._closed = threading.Event()
        self._closer: Callable[[], None] | None = None

    def _put(self, item) -> bool:
        fut = asyncio.run_coroutine_threadsafe(self._queue.put(item), self._loop)
        while not self._closed.is_set():
            try:
                fut.result(0.5)
                return True
            except TimeoutError:
                continue
        fut.cancel()
        return False

    def _run(self) -> None:
        try:
            stream = self._open()
            self._closer = getattr(stream, "close", None)
            for chunk in stream:
                if not self._put(chunk):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine side
            if not self._closed.is_set():
                self._put(exc)

    def start(self) -> ThreadPump:
        self._executor.submit(self._run)
        return self

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop reading: the thread ends at its next chunk or as its stream closes."""
        self._closed.set()
        if self._closer:
            try:
                self._closer()
            except Exception:  # noqa: BLE001 - closing a stream another thread reads
                pass
        while not self._queue.empty():  # unblock a thread waiting on a full queue
            self._queue.get_nowait()
