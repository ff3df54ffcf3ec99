"""The one place that reaches into tornado's internals, for speed (docs/architecture.md).

Uploads and downloads move gigabytes through the agent and the server; tornado's public
API copies every byte two or three times on the way. These two helpers go around it, using
private names of tornado 6's HTTP/1 connection and RequestHandler:
``HTTP1Connection._read_fixed_body / _deliver_body / params / _chunking_output / stream``
and ``RequestHandler._headers_written / _write_buffer / _transforms`` (``_gzipping`` on
GZipContentEncoding). tests/test_tornado_io.py checks that the tornado version installed
is one pyproject allows and that each name is still there, so an upgrade that moves one
fails a test instead of silently falling back or breaking a transfer.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

PRIVATE_CONNECTION_NAMES = ("params", "_deliver_body", "_read_fixed_body", "_chunking_output")
PRIVATE_HANDLER_NAMES = ("_headers_written", "_write_buffer", "_transforms")


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
