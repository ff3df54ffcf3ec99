"""Relaying an async stream of chunks to an HTTP client that may leave at any moment."""

from __future__ import annotations

import asyncio
import copy
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


def read_body_in(handler, size: int) -> Callable[[], None]:
    """Read this request's streamed body in `size` pieces, each straight off the socket
    into a buffer of its own: tornado's reads come 64 KiB at a time and copy every byte
    twice on the way (its read buffer, then bytes cut from it), which was most of the
    server's and agent's Python time on an upload. A body with a Content-Length only
    (tornado keeps chunked bodies); the pieces are bytearrays. Returns what puts the
    connection's read size back (call it in on_finish: keep-alive reuses the socket)."""
    conn = handler.request.connection
    conn.set_max_body_size(1 << 62)
    if not hasattr(conn, "params") or not hasattr(conn, "_deliver_body"):
        return lambda: None  # not tornado's HTTP/1 connection: its defaults
    conn.params = copy.copy(conn.params)
    conn.params.chunk_size = size
    stream, before = conn.stream, conn.stream.read_chunk_size
    stream.read_chunk_size = size

    async def read_fixed_body(length: int, delegate) -> None:
        while length > 0:
            buf = bytearray(min(size, length))
            got = await stream.read_into(buf, partial=True)
            if got < len(buf):
                del buf[got:]
            length -= got
            await conn._deliver_body(delegate, buf)
            await asyncio.sleep(0)  # as tornado does: other connections get their turn

    conn._read_fixed_body = read_fixed_body

    def restore() -> None:
        stream.read_chunk_size = before
        conn.__dict__.pop("_read_fixed_body", None)

    return restore


class BodyWriter:
    """write/flush for relay(): a large chunk of a chunked response goes to the socket as
    it is, between its size line and CRLF, where tornado's own framing would concatenate
    them into new bytes (two more copies of every byte: a third of the server's CPU when
    it relays a download). Headers, small chunks, unchunked and gzipped responses go
    tornado's way.
    """

    LARGE = 64 << 10

    def __init__(self, handler) -> None:
        self.handler = handler
        self.sent = None
        # A stream's events are small writes: without TCP_NODELAY, Nagle holds one back
        # while the peer delays its ACK of the last, until tornado sets it at the end (the
        # agent's exit event waited for its log's fsync that way).
        stream = getattr(handler.request.connection, "stream", None)
        if stream is not None:
            stream.set_nodelay(True)

    def write(self, chunk: bytes) -> None:
        handler, conn = self.handler, self.handler.request.connection
        if (
            len(chunk) < self.LARGE
            or not handler._headers_written
            or handler._write_buffer
            or not getattr(conn, "_chunking_output", False)
            or any(getattr(t, "_gzipping", False) for t in handler._transforms)
        ):
            handler.write(chunk)
            self.sent = None
            return
        stream = conn.stream
        stream.write(b"%x\r\n" % len(chunk))
        stream.write(chunk)
        self.sent = stream.write(b"\r\n")

    async def flush(self) -> None:
        if self.sent is None:
            await self.handler.flush()
        else:
            sent, self.sent = self.sent, None
            await sent


def wants_records(accept: str | None) -> bool:
    """The client reads event records (runner/records.py), not only NDJSON."""
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
