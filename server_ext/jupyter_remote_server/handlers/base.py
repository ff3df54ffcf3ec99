"""The base of every /remote/api handler: typed bodies, JSON answers, streams, errors."""

from __future__ import annotations

import asyncio
import json

from jupyter_server.base.handlers import APIHandler
from tornado.iostream import StreamClosedError

from jupyter_remote.http.relay import BodyWriter, ClientGone, as_ndjson, relay, wants_records
from jupyter_remote.protocol.errors import BadRequest, PayloadTooLarge, RemoteError
from jupyter_remote.protocol.records import RECORDS_TYPE
from jupyter_remote.protocol.validation import load_object, parse_body
from jupyter_remote_server.services.manager import RemoteManager

NDJSON = "application/x-ndjson"


class RemoteHandler(APIHandler):
    """JSON in and out; RemoteError becomes a 4xx/5xx with {"message", "reason"}."""

    auth_resource = "remote"

    @property
    def manager(self) -> RemoteManager:
        return self.settings["jupyter_remote_manager"]

    def body(self, model, limit: str = "max_job_body"):
        """The typed body and its JSON (None fields dropped), checked before anything happens.

        Refused here: a body over the limit (413), JSON that is not one bounded object of
        finite numbers, and any field breaking its model's rule (400 bad_FIELD).
        """
        size, most = len(self.request.body), self.settings[f"jupyter_remote_{limit}"]
        if size > most:
            raise PayloadTooLarge(
                f"request body is {size} bytes; this server takes at most {most} "
                f"(c.RemoteApp.{limit})",
                reason="body_too_large",
            )
        data = load_object(self.request.body)
        parsed = parse_body(model, data)
        return parsed, {k: v for k, v in data.items() if v is not None}

    def send(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def int_arg(self, name: str, default: int = 0) -> int:
        raw = self.get_query_argument(name, str(default))
        if not raw.isdigit():
            raise BadRequest(f"{name} must be an integer >= 0; got {raw!r}", reason=f"bad_{name}")
        return int(raw)

    def flag(self, name: str) -> bool:
        return self.get_query_argument(name, "0").lower() in ("1", "true", "yes")

    async def stream_events(self, chunks) -> None:
        """An execution's event records; NDJSON unless the client asked for records."""
        if wants_records(self.request.headers.get("Accept")):
            await self.stream(chunks, RECORDS_TYPE)
        else:
            await self.stream(as_ndjson(chunks))

    async def stream(self, chunks, content_type: str = NDJSON) -> None:
        """Relay chunks; the first one is awaited before headers so errors stay JSON."""
        it = aiter(chunks)
        try:
            first = await anext(it)
        except StopAsyncIteration:
            first = b""
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._gone = asyncio.Event()

        async def rest():
            try:
                yield first
                async for chunk in it:
                    yield chunk
            finally:  # a caller that left must reach the source's clean-up (cancel)
                await it.aclose()

        try:
            body = BodyWriter(self)
            await relay(rest(), body.write, body.flush, self._gone)
            self.finish()
        except (StreamClosedError, ClientGone):
            self.log.info("jupyter-remote: client left %s", self.request.path)

    def on_connection_close(self) -> None:
        if getattr(self, "_gone", None) is not None:
            self._gone.set()

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, RemoteError):
            if self._headers_written:
                self.finish()
                return
            self.clear()
            self.set_status(e.status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(e.to_json()))
            return
        super()._handle_request_exception(e)
