"""Chunks between the IOLoop and a blocking thread, both ways, with bounded read-ahead:
an upload's body to the thread that puts it, a download's chunks to the client."""

from __future__ import annotations

import asyncio
import collections
import threading

from jupyter_remote.protocol.tarstream import BadArchive


class Channel:
    """Chunks from the IOLoop to a thread: at most `depth` waiting (the sender awaits room),
    so a slow container slows the client and memory stays flat."""

    END = object()
    GONE = object()

    def __init__(self, depth: int = 8) -> None:
        self.loop = asyncio.get_running_loop()
        self.depth = depth
        self.queue: collections.deque = collections.deque()
        self.cv = threading.Condition()
        self.room: asyncio.Future | None = None
        self.dead = False

    async def put(self, item) -> None:
        while True:
            with self.cv:
                if self.dead:
                    return
                if len(self.queue) < self.depth or item is self.END or item is self.GONE:
                    self.queue.append(item)
                    self.cv.notify()
                    return
                self.room = self.loop.create_future()
                room = self.room
            await room

    def _wake(self) -> None:
        room, self.room = self.room, None
        if room is not None:
            self.loop.call_soon_threadsafe(lambda: room.done() or room.set_result(None))

    def close(self) -> None:
        """The reader is done: later chunks are dropped."""
        with self.cv:
            self.dead = True
            self.queue.clear()
            self._wake()

    def __iter__(self):
        while True:
            with self.cv:
                while not self.queue:
                    self.cv.wait()
                item = self.queue.popleft()
                self._wake()
            if item is self.END:
                return
            if item is self.GONE:
                raise BadArchive("the client left before the archive ended")
            yield item


def read_ahead(chunks, depth: int = 8):
    """A blocking iterator's chunks as an async iterator, read ahead on a thread of its
    own (at most `depth` waiting), so reading the source and writing to the client overlap."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    slots = threading.Semaphore(depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for chunk in chunks:
                while not slots.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine side
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()

    async def agen():
        try:
            while True:
                item = await queue.get()
                slots.release()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    threading.Thread(target=read, daemon=True, name="transfer-read").start()
    return agen()
