"""Relaying an async stream of chunks to an HTTP client that may leave at any moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from jupyter_remote.protocol.records import RECORDS_TYPE, Splitter, to_ndjson


class ClientGone(Exception):
    """The HTTP client closed its connection."""


async def relay(
    chunks: AsyncIterator[bytes],
    write: Callable[[bytes], None],
    flush: Callable[[], Awaitable],
    gone: asyncio.Event,
) -> None:
    """Copy chunks to the client as they come; stop at once if it leaves while we wait.

    A client that leaves a silent stream is noticed now, not at the next chunk, so nothing
    waits on its behalf. Raises ClientGone in that case; the source is closed either way.
    Its leaving cancels this task (a watcher on `gone`), rather than every chunk racing
    `gone` in a task of its own (~60 us a chunk, on both hops of every cell).
    """
    it = aiter(chunks)
    task = asyncio.current_task()
    state = {"left": False, "over": False}

    def leave(_) -> None:
        if not state["over"] and gone.is_set():
            state["left"] = True
            task.cancel()

    watcher = asyncio.ensure_future(gone.wait())
    watcher.add_done_callback(leave)
    try:
        async for chunk in it:
            if chunk:
                write(chunk)
                await flush()
    except asyncio.CancelledError:
        if not state["left"]:
            raise
        if hasattr(task, "uncancel"):  # 3.11+: this cancel was ours, not the caller's
            task.uncancel()
        raise ClientGone() from None
    finally:
        state["over"] = True
        watcher.cancel()
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


def wants_records(accept: str | None) -> bool:
    """The client reads event records (protocol/records.py), not only NDJSON."""
    return bool(accept) and RECORDS_TYPE in accept


async def as_ndjson(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """An event stream of records as NDJSON, for clients that did not ask for records
    (curl, browsers, other tools): each output record becomes a ``{"event","data"}`` line."""
    splitter = Splitter()
    it = aiter(chunks)
    try:
        async for chunk in it:
            whole = splitter.feed(chunk)
            if whole:
                yield to_ndjson(whole)
    finally:  # the source's clean-up runs when the client leaves
        closing = getattr(it, "aclose", None)
        if closing is not None:
            await closing()
