"""HTTP to one agent on the event loop (aiohttp): keep-alive, a timeout on every call, no retries.

Seed 000's rules hold here as in the kernel side's client (jupyter_remote.http.api): nothing
is ever re-sent (a command may have side effects), an answer is awaited for at most
max(1800, timeout + 30) s of silence, and an error answer is read by `error_from_body`.
Each node has two connection pools: work calls (and the streams they open, until closed)
share `pool_maxsize - 2` connections; liveness calls (health, resources, the job feed's
long poll, the panel's quick list) have two of their own, so no pile of work delays them.
https (a CA bundle from REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE) and proxies (the environment's,
read once per node) take this same path as plain HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.request
from urllib.parse import urlsplit

import aiohttp

from jupyter_remote.http.api import CONTROL_CONNECTIONS, DEFAULT_TIMEOUT, why_failed
from jupyter_remote.protocol.errors import ConnectionFailed, TimedOut, Unavailable, error_from_body
from jupyter_remote.protocol.records import RECORDS_TYPE
from jupyter_remote.util.failures import OUT_OF_FILES

ERROR_BODY_LIMIT = 1 << 20  # most bytes of a refusal's body read
DRAIN_WAIT = 5.0  # seconds to read an answer's end after its last event, for reuse
KEEPALIVE = 60.0  # seconds an idle connection is kept

_draining: set[asyncio.Task] = set()


def environ_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (no_proxy honoured), read once."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def failed(exc: BaseException) -> str:
    """A failed connection in a few words (refused, reset, ...), as the sync client says."""
    cause = getattr(exc, "os_error", None) or exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, ConnectionResetError):
        return "connection reset"
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return "the connection closed mid-answer"
    return why_failed(cause)


def ssl_context() -> ssl.SSLContext | bool:
    """Certificates checked against the CA bundle the environment names, else the system's."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else True


class NodeHttp:
    """Keep-alive connections to one agent; every call bounded in time, none retried."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        pool_maxsize: int = 10,
        connect_timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.limits = {False: max(1, pool_maxsize - CONTROL_CONNECTIONS), True: CONTROL_CONNECTIONS}
        self.headers = {"Accept": f"{RECORDS_TYPE}, application/json, */*;q=0.1"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.proxy = environ_proxy(self.url)
        self._ssl = ssl_context() if self.url.startswith("https:") else True
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def _session(self, control: bool) -> aiohttp.ClientSession:
        """The work or the liveness pool, made on first use (inside the running loop)."""
        session = self._sessions.get(control)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limits[control], ssl=self._ssl, keepalive_timeout=KEEPALIVE
            )
            session = aiohttp.ClientSession(
                connector=connector, headers=self.headers, trust_env=False
            )
            # aiohttp re-sends an idempotent request (GET, PUT, DELETE) once when its
            # connection drops; a call here is never re-sent. The one private name we set.
            session._retry_connection = False
            self._sessions[control] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def open(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        control: bool = False,
        what: str | None = None,
        **kw,
    ) -> Answer:
        """Send one request and read its head; the body is read from the Answer returned.

        `timeout`: the most seconds of silence (no byte of the answer) waited for; a 4xx or
        5xx is raised here, read as the API's error. `what` names the stream in errors.
        """
        url = self.url + path
        where = f"{method} {url}"
        bounds = aiohttp.ClientTimeout(
            sock_connect=self.connect_timeout, sock_read=timeout or DEFAULT_TIMEOUT
        )
        session = self._session(control)
        try:
            resp = await session.request(method, url, timeout=bounds, proxy=self.proxy, **kw)
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            if isinstance(exc, asyncio.TimeoutError):
                raise TimedOut(f"{where}: connecting timed out", sent=False) from None
            if getattr(getattr(exc, "os_error", None), "errno", None) in OUT_OF_FILES:
                raise Unavailable(
                    f"{where} not sent: the Jupyter server has run out of open files "
                    "(raise c.RemoteApp.open_files_limit or ulimit -n)",
                    reason="too_many_open_files",
                ) from None
            raise ConnectionFailed(f"{where} failed: {failed(exc)}", sent=False) from None
        except asyncio.TimeoutError:
            raise TimedOut(f"{where} timed out waiting for an answer", sent=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(f"{where} failed: {failed(exc)}", sent=True) from None
        answer = Answer(resp, where, what or where)
        if resp.status >= 400:
            try:
                data = await answer.read(ERROR_BODY_LIMIT)
            finally:
                answer.close()
            raise error_from_body(resp.status, data, where)
        return answer

    async def json(self, method: str, path: str, **kw) -> dict:
        """One call whose answer is JSON, read whole; its connection goes back to the pool."""
        answer = await self.open(method, path, **kw)
        try:
            data = await answer.read()
        finally:
            answer.close()
        return json.loads(data)


class Answer:
    """An answer's body as an async iterator of chunks, read as it comes (backpressure: the
    socket is read only as fast as the chunks are taken). Close it when done: that returns
    its connection (read to its end) or drops it."""

    def __init__(self, resp: aiohttp.ClientResponse, where: str, what: str) -> None:
        self.resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self._where = where
        self._what = what
        self._closed = False

    def __aiter__(self) -> Answer:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._read(self.resp.content.readany())
        if not chunk:
            self.close()
            raise StopAsyncIteration
        return chunk

    async def read(self, limit: int | None = None) -> bytes:
        """The whole rest of the body (at most `limit` bytes)."""
        parts, size = [], 0
        async for chunk in self:
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                break
        return b"".join(parts)

    async def _read(self, reading):
        try:
            return await reading
        except asyncio.TimeoutError:
            raise TimedOut(f"{self._where} timed out waiting for an answer", sent=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(
                f"the stream of {self._what} broke: {failed(exc)}",
                reason="stream_broken",
                sent=True,
            ) from None

    def close(self, reuse: bool = False) -> None:
        """Done with it. With `reuse` (its last event was read), the rest of the answer (the
        agent ends it right after) is read in the background so its connection is kept;
        otherwise an answer not read to its end drops its connection."""
        if self._closed:
            return
        self._closed = True
        if self.resp.content.at_eof():
            self.resp.release()
        elif reuse:
            draining = asyncio.get_running_loop().create_task(self._drain())
            _draining.add(draining)  # held until done: the loop keeps only a weak reference
            draining.add_done_callback(_draining.discard)
        else:
            self.resp.close()

    async def _drain(self) -> None:
        try:
            await asyncio.wait_for(self.resp.content.read(), DRAIN_WAIT)
        except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
            self.resp.close()
            return
        self.resp.release()
