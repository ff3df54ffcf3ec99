"""HTTP plumbing shared by the agent and server clients.

Seed 000's rules hold here: one pooled keep-alive requests.Session, no retries of any kind
(a command may have side effects), a request timeout of max(1800, timeout + 30), and
errors rebuilt from the API's JSON as exception classes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter

from jupyter_remote.protocol.errors import ConnectionFailed, TimedOut, error_from_response
from jupyter_remote.protocol.records import RECORDS_TYPE, Splitter, events

DEFAULT_TIMEOUT = 1800


def request_timeout(command_timeout: float | None) -> float:
    """How long to wait for an answer: never less than 30 minutes (seed 000)."""
    return max(DEFAULT_TIMEOUT, (command_timeout or 0) + 30)


CONTROL_CONNECTIONS = 2  # kept free for one health poll and one job-feed long-poll


class HttpApi:
    """A pooled keep-alive session to one API that never retries.

    It never holds more than `pool_maxsize` connections to its peer: work requests (and
    the streams they return, until closed) take one of `pool_maxsize - 2` slots, waiting
    when all are taken; health polls and the job feed use the two kept free.
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
            try:
                body = resp.json()
            except ValueError:
                body = {"message": resp.text[:500] or resp.reason}
            raise error_from_response(resp.status_code, body)
        return resp

    def _json(self, method: str, path: str, **kw) -> dict:
        return self._request(method, path, **kw).json()

    # -- node --------------------------------------------------------------------------

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


def why_failed(exc: BaseException) -> str:
    """A failed connection in a few words (refused, reset, timed out, ...)."""
    text = str(exc)
    for word in ("refused", "reset", "timed out", "aborted", "Name or service not known"):
        if word.lower() in text.lower():
            return f"connection {word}" if word in ("refused", "reset", "aborted") else word
    return text
