"""Relaying an async stream of chunks to an HTTP client that may leave at any moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable


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
    """
    it = aiter(chunks)
    left = asyncio.ensure_future(gone.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(it))
            await asyncio.wait({nxt, left}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                await asyncio.wait({nxt})  # let the source finish cancelling first
                raise ClientGone()
            try:
                chunk = nxt.result()
            except StopAsyncIteration:
                return
            if chunk:
                write(chunk)
                await flush()
    finally:
        left.cancel()
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
