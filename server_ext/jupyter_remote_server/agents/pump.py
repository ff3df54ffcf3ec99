"""Bridging a blocking HTTP stream (requests) onto the event loop, with backpressure."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

import requests

from jupyter_remote_server.agents.client import stream_chunks

_END = object()


class ThreadPump:
    """Reads a response body on a worker thread; the coroutine side iterates its chunks.

    At most `depth` chunks wait in memory: a slow reader slows the thread, not the server's
    memory. `close()` stops the thread by closing the response. A broken stream arrives as
    ConnectionFailed naming `what`.
    """

    def __init__(
        self,
        open_response: Callable[[], requests.Response],
        what: str,
        executor: Executor,
        depth: int = 32,
    ) -> None:
        self._open = open_response
        self._what = what
        self._executor = executor
        self._queue: asyncio.Queue = asyncio.Queue()
        self._slots = threading.Semaphore(depth)  # chunks the thread may have queued
        self._loop = asyncio.get_running_loop()
        self._closed = threading.Event()
        self._response: requests.Response | None = None

    def _put(self, item) -> bool:
        """One plain call_soon_threadsafe per chunk (no coroutine, no future to wait on);
        the semaphore is the backpressure: the thread waits while `depth` chunks wait."""
        while not self._slots.acquire(timeout=0.5):
            if self._closed.is_set():
                return False
        if self._closed.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is stopping
            return False
        return True

    def _run(self) -> None:
        try:
            self._response = self._open()
            if self._closed.is_set():
                self._response.close()
                return
            for chunk in stream_chunks(self._response, self._what):
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
            self._slots.release()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self, reuse: bool = False) -> None:
        """Stop reading, without blocking the event loop (`reuse`: as AgentStream's, but a
        connection read on a thread is never reused).

        Closing a response that another thread is reading would wait for that read to
        return (the buffered reader's lock), perhaps for minutes; shutting the socket down
        wakes the reader at once, and it closes the response itself.
        """
        self._closed.set()
        if self._response is not None:
            _shutdown(self._response)
        while not self._queue.empty():  # unblock a thread waiting for a slot
            self._queue.get_nowait()
            self._slots.release()


def _shutdown(response: requests.Response) -> None:
    conn = getattr(response.raw, "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is None:
        return  # the body was read already and the connection went back to the pool
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
