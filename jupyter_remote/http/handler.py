"""The one handler contract both APIs share: JSON in and out, errors as JSON, streams.

The agent's handlers mix it into tornado's RequestHandler, the server's into jupyter_server's
APIHandler (which brings Jupyter's auth). Errors go through tornado's public hooks
(``send_error``, ``write_error``, ``log_exception``): a RemoteError becomes its status and
``{"message", "reason", ...}``, never a traceback page.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator

from tornado import httputil
from tornado.iostream import StreamClosedError

from jupyter_remote.http.relay import ClientGone, as_ndjson, relay, wants_records
from jupyter_remote.http.tornado_io import BodyWriter
from jupyter_remote.protocol.errors import BadRequest, RemoteError
from jupyter_remote.protocol.records import RECORDS_TYPE

NDJSON = "application/x-ndjson"
log = logging.getLogger("jupyter_remote.http")


def token_matches(given: str, token: str) -> bool:
    """Constant-time, as bytes: a header tornado decoded as latin-1 may hold any character."""
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


def bearer(header: str) -> tuple[str, str]:
    """(scheme, credential) of an Authorization header."""
    scheme, _, value = header.partition(" ")
    return scheme, value.strip()


class JsonApiMixin:
    """send / flag / int_arg / stream / stream_events and JSON errors, for any tornado handler.

    Put it first among the bases: ``class H(JsonApiMixin, web.RequestHandler)``.
    """

    # True: the first chunk of a stream is awaited before the headers go, so an error
    # raised by the source before any output is still a JSON error with its own status.
    hold_headers_for_first_chunk = True
    # JSON for plain HTTP errors (404 of an unknown route, 405); False keeps the base's own.
    json_http_errors = True
    _streaming = False
    _gone: asyncio.Event | None = None

    def send(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def send_encoded(self, data: bytes, status: int = 200) -> None:
        """A JSON answer already encoded (one shared by many requests)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(data)

    def flag(self, name: str) -> bool:
        return self.get_query_argument(name, "0").lower() in ("1", "true", "yes")

    def int_arg(self, name: str, default: int = 0) -> int:
        """A query argument that is a whole number >= 0, or a 400 ``bad_NAME``."""
        raw = self.get_query_argument(name, str(default)).strip()
        if not raw.isdigit() or not raw.isascii():
            raise BadRequest(f"{name} must be an integer >= 0; got {raw!r}", reason=f"bad_{name}")
        return int(raw)

    async def stream_events(self, chunks: AsyncIterator[bytes]) -> None:
        """An execution's event records; NDJSON unless the client asked for records."""
        if wants_records(self.request.headers.get("Accept")):
            await self.stream(chunks, RECORDS_TYPE)
        else:
            await self.stream(as_ndjson(chunks))

    async def stream(self, chunks: AsyncIterator[bytes], content_type: str = NDJSON) -> None:
        """Send chunks as they come; a client that leaves stops this copy, not the work."""
        it = aiter(chunks)
        if self.hold_headers_for_first_chunk:
            it = await _with_first(it)
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = asyncio.Event()
        self._streaming = True
        try:
            body = BodyWriter(self)
            await relay(it, body.write, body.flush, self._gone)
            self.finish()
        except (StreamClosedError, ClientGone):
            req = self.request
            log.info("client left %s %s; the work goes on", req.method, req.path)

    def on_connection_close(self) -> None:
        if self._gone is not None:
            self._gone.set()
        super().on_connection_close()

    # -- errors, through tornado's public hooks -------------------------------------------
    def send_error(self, status_code: int = 500, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if self._streaming:  # mid-stream: the status went long ago; end the response
            try:
                self.finish()
            except RuntimeError:
                pass
            return
        if isinstance(exc, RemoteError):
            status_code = exc.status
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, RemoteError):
            body = exc.to_json()
        elif self.json_http_errors:
            message = getattr(exc, "log_message", None) or httputil.responses.get(
                status_code, "Unknown"
            )
            body = {"message": message, "reason": "http_error"}
        else:
            super().write_error(status_code, **kwargs)
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ, value, tb) -> None:
        """A RemoteError is an answer, not a crash: one line, no traceback (a warning
        when it is the peer's or the pool's fault: 5xx)."""
        if isinstance(value, RemoteError):
            level = logging.WARNING if value.status >= 500 else logging.DEBUG
            req = self.request
            log.log(level, "%s %s: %d %s", req.method, req.path, value.status, value.message)
            return
        super().log_exception(typ, value, tb)


async def _with_first(it: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`it` with its first chunk already read (raising here, before any header is sent)."""
    try:
        first = await anext(it)
    except StopAsyncIteration:
        first = b""

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in it:
                yield chunk
        finally:  # a caller that left must reach the source's clean-up (cancel)
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    return rest()
