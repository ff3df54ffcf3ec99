"""Low-level client of one executor agent: one method per endpoint, dicts in and out.

Seed 000's rules hold here: one pooled keep-alive requests.Session, no retries of any kind
(a command may have side effects), and a request timeout of max(1800, timeout + 30).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter

from jupyter_remote.errors import ConnectionFailed, TimedOut, error_from_response

DEFAULT_TIMEOUT = 1800


def request_timeout(command_timeout: float | None) -> float:
    """How long to wait for an answer: never less than 30 minutes (seed 000)."""
    return max(DEFAULT_TIMEOUT, (command_timeout or 0) + 30)


CONTROL_CONNECTIONS = 2  # kept free for one health poll and one job-feed long-poll


class AgentClient:
    """Talks to one agent over a pooled keep-alive session that never retries.

    It never holds more than `pool_maxsize` connections to its agent: work requests (and
    the streams they return, until closed) take one of `pool_maxsize - 2` slots, waiting
    when all are taken; health polls and the job feed use the two kept free.
    """

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
        self.http.headers["Connection"] = "keep-alive"
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

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
            message = f"{method} {url} failed: {_why(exc)}"
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
    def info(self) -> dict:
        return self._json("GET", "/v1", timeout=30)

    def health(self, timeout: float = 30) -> dict:
        return self._json("GET", "/v1/health", timeout=timeout, control=True)

    def resources(self, timeout: float = 30) -> dict:
        return self._json("GET", "/v1/resources", timeout=timeout, control=True)

    # -- sessions ----------------------------------------------------------------------
    def create_session(self, **spec) -> dict:
        return self._json("POST", "/v1/sessions", json=spec, timeout=120)

    def sessions(self) -> list[dict]:
        return self._json("GET", "/v1/sessions")["sessions"]

    def session(self, session_id: str) -> dict:
        return self._json("GET", f"/v1/sessions/{session_id}")

    def delete_session(self, session_id: str) -> dict:
        return self._json("DELETE", f"/v1/sessions/{session_id}", timeout=120)

    # -- executions --------------------------------------------------------------------
    def execute_stream(self, execution_id: str, **body) -> Iterator[dict]:
        """Start an execution and yield its events as they arrive (started ... exit)."""
        resp = self.open_execution(execution_id, **body)
        return self._events(resp, f"execution {execution_id}")

    def open_execution(self, execution_id: str, **body) -> requests.Response:
        """Start an execution; the response streams its NDJSON events (4xx raised first)."""
        return self._request(
            "POST",
            "/v1/executions",
            stream=True,
            json={"execution_id": execution_id, **body},
            timeout=request_timeout(body.get("timeout")),
        )

    def execution(self, execution_id: str) -> dict:
        return self._json("GET", f"/v1/executions/{execution_id}")

    def executions(self, limit: int = 100) -> list[dict]:
        return self._json("GET", "/v1/executions", params={"limit": limit})["executions"]

    def execution_events(
        self, execution_id: str, offset: int = 0, follow: bool = False
    ) -> Iterator[dict]:
        resp = self._request(
            "GET",
            f"/v1/executions/{execution_id}/events",
            stream=True,
            params={"offset": offset, "follow": int(follow)},
        )
        return self._events(resp, f"execution {execution_id}")

    def cancel(self, execution_id: str) -> dict:
        return self._json("POST", f"/v1/executions/{execution_id}/cancel", timeout=60)

    def execute(self, command: str, timeout: float | None = None, **body) -> dict:
        """Seed 000's plain call: {"output", "returncode"}."""
        return self._json(
            "POST",
            "/execute",
            json={"command": command, "timeout": timeout, **body},
            timeout=request_timeout(timeout),
        )

    # -- jobs --------------------------------------------------------------------------
    def submit_job(self, **body) -> dict:
        return self._json("POST", "/v1/jobs", json=body, timeout=120)

    def jobs(self) -> list[dict]:
        return self._json("GET", "/v1/jobs")["jobs"]

    def job_changes(self, since: int, wait: float = 25) -> dict:
        """Jobs changed after feed version `since`, waiting up to `wait` s for one."""
        return self._json(
            "GET",
            "/v1/jobs",
            params={"since": since, "wait": int(wait)},
            timeout=wait + 30,
            control=True,
        )

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def stop_job(self, job_id: str) -> dict:
        return self._json("POST", f"/v1/jobs/{job_id}/stop", timeout=120)

    def job_logs(
        self, job_id: str, task: int = 0, offset: int = 0, follow: bool = False
    ) -> Iterator[bytes]:
        return stream_chunks(
            self.open_job_logs(job_id, task, offset, follow), f"logs of job {job_id}"
        )

    def open_job_logs(
        self, job_id: str, task: int = 0, offset: int = 0, follow: bool = False
    ) -> requests.Response:
        params = {"task": task, "offset": offset, "follow": int(follow)}
        return self._request("GET", f"/v1/jobs/{job_id}/logs", stream=True, params=params)

    def open_execution_events(
        self, execution_id: str, offset: int = 0, follow: bool = False
    ) -> requests.Response:
        params = {"offset": offset, "follow": int(follow)}
        path = f"/v1/executions/{execution_id}/events"
        return self._request("GET", path, stream=True, params=params)

    def _events(self, resp: requests.Response, what: str) -> Iterator[dict]:
        try:
            for line in resp.iter_lines(chunk_size=1 << 16):
                if line:
                    yield json.loads(line)
        except requests.RequestException as exc:
            raise ConnectionFailed(
                f"the stream of {what} from {self.url} broke: {_why(exc)}", reason="stream_broken"
            ) from None
        finally:
            resp.close()


def stream_chunks(resp: requests.Response, what: str) -> Iterator[bytes]:
    try:
        yield from resp.iter_content(chunk_size=None)
    except requests.RequestException as exc:
        raise ConnectionFailed(
            f"the stream of {what} broke: {_why(exc)}", reason="stream_broken"
        ) from None
    finally:
        resp.close()


def _once(fn):
    done = threading.Lock()

    def call() -> None:
        if done.acquire(blocking=False):
            fn()

    return call


def _why(exc: Exception) -> str:
    text = str(exc)
    for word in ("refused", "reset", "timed out", "aborted", "Name or service not known"):
        if word.lower() in text.lower():
            return f"connection {word}" if word in ("refused", "reset", "aborted") else word
    return text
