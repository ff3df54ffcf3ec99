"""An execution's stream from its agent, read on the event loop.

The blocking client (requests on a worker thread, chunks handed over by a ThreadPump) costs
two thread hops and requests' own work on every cell, ~1 ms of a ~10 ms cell. This is the
same request, POST /v1/executions, written once on an asyncio connection; the chunked answer
is handed on as it comes. Idle keep-alive connections are pooled per agent and reused only
when their last answer was read to its end and they are still open: a request is never
re-sent, and one written on a connection that then breaks has an unknown outcome, as on any
connection. Plain-HTTP agents reached without a proxy take this path; the others keep the
thread path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from jupyter_remote_server.agents.client import AgentClient
from jupyter_remote.protocol.errors import ConnectionFailed, TimedOut, error_from_response
from jupyter_remote.http.api import request_timeout, why_failed
from jupyter_remote.protocol.records import RECORDS_TYPE

IDLE_KEPT = 4  # idle connections kept per agent
ERROR_BODY_LIMIT = 1 << 20  # most bytes of a refusal's JSON body read
DRAIN_WAIT = 5.0  # seconds to read an answer's end after its exit event, for reuse


class AgentStreams:
    """Opens execution streams to agents; holds each agent's idle connections."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple]] = {}

    @staticmethod
    def usable(client: AgentClient) -> bool:
        """Plain HTTP with no proxy: what this client speaks."""
        return urlsplit(client.url).scheme == "http" and not client.http.proxies

    async def open_execution(
        self, client: AgentClient, execution_id: str, body: dict
    ) -> AgentStream:
        """Send the execution; its answer is read by iterating the stream returned (a
        refusal is raised there, before the first chunk)."""
        url = urlsplit(client.url)
        where = (url.hostname or "127.0.0.1", url.port or 80)
        payload = json.dumps({"execution_id": execution_id, **body}).encode()
        head = (
            f"POST {url.path.rstrip('/')}/v1/executions HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\n"
            "Content-Type: application/json\r\n"
            f"Accept: {RECORDS_TYPE}, application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: keep-alive\r\n"
        )
        auth = client.http.headers.get("Authorization")
        if auth:
            head += f"Authorization: {auth}\r\n"
        what = f"POST {client.url}/v1/executions"
        reader, writer = await self._connection(where, client.connect_timeout, what)
        writer.write(head.encode("latin-1") + b"\r\n" + payload)
        return AgentStream(self, where, reader, writer, what, request_timeout(body.get("timeout")))

    async def _connection(self, where: tuple[str, int], timeout: float, what: str):
        idle = self._idle.get(where) or []
        while idle:
            reader, writer = idle.pop()
            if not reader.at_eof() and not writer.is_closing() and reader.exception() is None:
                return reader, writer
            writer.close()
        try:
            return await asyncio.wait_for(asyncio.open_connection(*where), timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"{what}: connecting timed out", sent=False) from None
        except OSError as exc:
            raise ConnectionFailed(f"{what} failed: {why_failed(exc)}", sent=False) from None

    def _keep(self, where: tuple[str, int], reader, writer) -> None:
        idle = self._idle.setdefault(where, [])
        if len(idle) < IDLE_KEPT:
            idle.append((reader, writer))
        else:
            writer.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.close()
        self._idle.clear()


class AgentStream:
    """One answer: iterating reads its head (4xx/5xx raised as errors), then its chunks."""

    def __init__(self, owner, where, reader, writer, what: str, timeout: float) -> None:
        self._owner = owner
        self._where = where
        self._reader = reader
        self._writer = writer
        self._what = what
        self._timeout = timeout
        self._headers: dict[str, str] = {}
        self._done = False  # the body was read to its end: the connection may be reused
        self._closed = False
        self._expired = False  # a read outlived the timeout: the connection was aborted

    async def _read(self, read, *args) -> bytes:
        """One read, bounded by the request's timeout (a frozen agent), errors named.

        The bound is a timer that aborts the connection, not asyncio.wait_for (a task per
        read, ~a tenth of the server's time per cell)."""
        timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)
        try:
            return await read(*args)
        except asyncio.IncompleteReadError:
            raise self._failed("the connection closed mid-answer") from None
        except (asyncio.LimitOverrunError, OSError) as exc:
            raise self._failed(why_failed(exc)) from None
        finally:
            timer.cancel()

    def _expire(self) -> None:
        self._expired = True
        self._writer.transport.abort()

    def _failed(self, why: str) -> ConnectionFailed:
        if self._expired:
            return TimedOut(f"{self._what} timed out waiting for an answer", sent=True)
        return self._broken(why)

    def _broken(self, why: str) -> ConnectionFailed:
        return ConnectionFailed(
            f"the stream of {self._what} broke: {why}", reason="stream_broken", sent=True
        )

    @property
    def _chunked(self) -> bool:
        return self._headers.get("transfer-encoding", "").lower() == "chunked"

    async def _read_head(self) -> None:
        raw = await self._read(self._reader.readuntil, b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise ConnectionFailed(
                f"{self._what}: not an HTTP answer: {lines[0][:80]!r}", sent=True
            ) from None
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                self._headers[name.strip().lower()] = value.strip()
        if status >= 400:
            raise error_from_response(status, await self._error_body(lines[0]))

    async def _error_body(self, status_line: str) -> dict:
        data = b""
        async for chunk in self._body():
            data += chunk
            if len(data) > ERROR_BODY_LIMIT:
                break
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
        return {"message": data[:500].decode("utf-8", "replace") or status_line}

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await self._read_head()
        async for chunk in self._body():
            yield chunk

    async def _body(self) -> AsyncIterator[bytes]:
        """The body's chunks as they come; ConnectionFailed when it breaks before its end."""
        reader = self._reader
        if self._chunked:
            while True:
                line = await self._read(reader.readuntil, b"\r\n")
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    raise self._broken("a bad chunk header") from None
                if size == 0:
                    await self._read(reader.readuntil, b"\r\n")  # no trailers are sent
                    break
                chunk = await self._read(reader.readexactly, size + 2)
                yield chunk[:-2]
        elif "content-length" in self._headers:
            try:
                left = int(self._headers["content-length"])
            except ValueError:
                raise self._broken("a bad Content-Length") from None
            while left > 0:
                chunk = await self._read(reader.read, min(left, 1 << 20))
                if not chunk:
                    raise self._failed("it ended early")
                left -= len(chunk)
                yield chunk
        else:  # the body ends when the connection does
            while chunk := await self._read(reader.read, 1 << 20):
                yield chunk
            if self._expired:
                raise self._failed("")
            self.close()
            return
        self._done = self._headers.get("connection", "").lower() != "close"
        self.close()

    def close(self, reuse: bool = False) -> None:
        """Done with it. With `reuse` (its exit event was read), the rest of the answer
        (the agent ends it right after) is read in the background, and the connection kept
        for the next request; otherwise an answer not read to its end closes it."""
        if self._closed:
            return
        if reuse and not self._done and self._chunked:
            self._timeout = DRAIN_WAIT
            asyncio.get_running_loop().create_task(self._drain())
            return
        self._closed = True
        if self._done:
            self._owner._keep(self._where, self._reader, self._writer)
        else:
            self._writer.close()

    async def _drain(self) -> None:
        try:
            async for _ in self._body():
                pass
        except Exception:  # noqa: BLE001 - a broken end only costs the connection
            pass
        self.close()
