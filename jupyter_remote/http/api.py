"""The synchronous HTTP client every kernel-side client is built on (HttpApi).

Seed 000's rules hold here: one pooled keep-alive requests.Session, no retries of any kind
(a command may have side effects), a request timeout of max(1800, timeout + 30), and every
error answer read by `error_from_body` into the exception class of its status. A streamed
POST (a cell) takes http.client's faster path where it can (lean_stream.py).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter

from jupyter_remote.http.lean_stream import LeanStreams, usable, why_failed
from jupyter_remote.protocol.errors import ConnectionFailed, TimedOut, error_from_body
from jupyter_remote.protocol.records import RECORDS_TYPE, Splitter, events
from jupyter_remote.protocol.rules import DEFAULT_COMMAND_TIMEOUT as DEFAULT_TIMEOUT


def request_timeout(command_timeout: float | None) -> float:
    """How long to wait for an answer: never less than the command's default time limit
    (seed 000), and the command's own limit and 30 s more."""
    return max(DEFAULT_TIMEOUT, (command_timeout or 0) + 30)


CONTROL_CONNECTIONS = 2  # kept free for one health poll and one job-feed long-poll


class HttpApi:
    """A pooled keep-alive session to one API that never retries.

    It never holds more than `pool_maxsize` connections to its peer: work requests (and
    the streams they return, until closed) take one of `pool_maxsize - 2` slots, waiting
    when all are taken; health polls and the job feed use the two kept free. With `lean`,
    streamed POSTs over plain HTTP without a proxy go over http.client (lean_stream.py).
    """

    auth_scheme = "Bearer"

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        pool_connections: int = 5,
        pool_maxsize: int = 10,
        connect_timeout: float = 10.0,
        lean: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.slots = threading.BoundedSemaphore(max(1, pool_maxsize - CONTROL_CONNECTIONS))
        self.http = requests.Session()
        adapter = HTTPAdapter(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            pool_block=False,
            max_retries=0,
        )
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        # The environment (proxies, CA bundle) is read once, here, not on every request:
        # requests' per-request look-ups (proxy variables, no_proxy, .netrc) cost ~0.1 ms
        # a request, on every hop of every cell.
        self.http.trust_env = False
        self.http.proxies.update(requests.utils.get_environ_proxies(self.url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.http.verify = bundle
        self.http.headers["Connection"] = "keep-alive"
        # event streams as sized records (output not JSON-escaped), JSON for the rest
        self.http.headers["Accept"] = f"{RECORDS_TYPE}, application/json, */*;q=0.1"
        if token:
            self.http.headers["Authorization"] = f"{self.auth_scheme} {token}"
        self._lean = (
            LeanStreams(self.url, dict(self.http.headers), connect_timeout)
            if lean and usable(self.url, self.http.proxies)
            else None
        )

    def close(self) -> None:
        self.http.close()

    # -- plumbing ----------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        stream: bool = False,
        control: bool = False,
        **kw,
    ) -> requests.Response:
        """One request, never retried; holds a work slot until its body is read or closed."""
        if control:
            return self._send(method, path, timeout=timeout, stream=stream, **kw)
        self.slots.acquire()
        try:
            resp = self._send(method, path, timeout=timeout, stream=stream, **kw)
        except BaseException:
            self.slots.release()
            raise
        if not stream:
            self.slots.release()
            return resp
        release = _once(self.slots.release)
        close = resp.close

        def close_and_release() -> None:
            try:
                close()
            finally:
                release()

        resp.close = close_and_release
        return resp

    def _send(
        self, method: str, path: str, *, timeout: float | None, stream: bool, **kw
    ) -> requests.Response:
        url = self.url + path
        try:
            resp = self.http.request(
                method,
                url,
                stream=stream,
                timeout=(self.connect_timeout, timeout or DEFAULT_TIMEOUT),
                **kw,
            )
        except requests.ConnectTimeout:
            raise TimedOut(f"{method} {url}: connecting timed out", sent=False) from None
        except requests.Timeout:
            raise TimedOut(f"{method} {url} timed out waiting for an answer", sent=True) from None
        except requests.ConnectionError as exc:
            refused = "NewConnectionError" in repr(exc) or "refused" in str(exc).lower()
            message = f"{method} {url} failed: {why_failed(exc)}"
            raise ConnectionFailed(message, sent=not refused) from None
        if resp.status_code >= 400:
            data = resp.content
            resp.close()
            raise error_from_body(resp.status_code, data, f"{method} {url}")
        return resp

    def _json(self, method: str, path: str, **kw) -> dict:
        return self._request(method, path, **kw).json()

    def _post_stream(self, path: str, body: dict, timeout: float):
        """A streamed POST of a JSON body (a cell): over http.client where it can, else
        requests; either answer holds a work slot until it is closed."""
        if self._lean is None:
            return self._request("POST", path, json=body, stream=True, timeout=timeout)
        self.slots.acquire()
        try:
            return self._lean.post(path, body, timeout, self.slots.release)
        except BaseException:
            self.slots.release()
            raise

    def _events(self, resp: requests.Response, what: str) -> Iterator[dict]:
        """The events of a streamed response (records or NDJSON), as they arrive."""
        splitter = Splitter()
        for chunk in stream_chunks(resp, f"{what} from {self.url}"):
            whole = splitter.feed(chunk)
            if whole:
                yield from events(whole)
        rest = splitter.rest()
        if rest.strip() and splitter.exit_line is None:  # a last line without its newline
            yield json.loads(rest)


def stream_chunks(resp: requests.Response, what: str) -> Iterator[bytes]:
    try:
        yield from resp.iter_content(chunk_size=None)
    except requests.RequestException as exc:
        raise ConnectionFailed(
            f"the stream of {what} broke: {why_failed(exc)}", reason="stream_broken"
        ) from None
    finally:
        resp.close()


def _once(fn):
    done = threading.Lock()

    def call() -> None:
        if done.acquire(blocking=False):
            fn()

    return call


__all__ = ["DEFAULT_TIMEOUT", "HttpApi", "request_timeout", "stream_chunks", "why_failed"]
