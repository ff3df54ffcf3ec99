"""Client of the server extension's API (/remote/api), used by magics, widgets and scripts.

It finds the server the way a kernel should: the URL and token that the server put in
the kernel's environment, else a running Jupyter server that answers /remote/api/status.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator

import requests

from jupyter_remote.http.api import HttpApi, request_timeout, stream_chunks
from jupyter_remote.kernel.execution import Execution
from jupyter_remote.protocol.errors import ConnectionFailed, NotFound, RemoteError
from jupyter_remote.util.workers import Workers

ENV_URL = "JUPYTER_REMOTE_SERVER_URL"
ENV_TOKEN = "JUPYTER_REMOTE_SERVER_TOKEN"


def discover(server_url: str | None = None, token: str | None = None) -> tuple[str, str]:
    """(server URL, token): given, from the environment, or from a running server."""
    if server_url:
        return server_url.rstrip("/"), token or os.environ.get(ENV_TOKEN, "")
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL].rstrip("/"), token or os.environ.get(ENV_TOKEN, "")
    try:
        from jupyter_server.serverapp import list_running_servers
    except ImportError:  # pragma: no cover - jupyter_server is a dependency
        list_running_servers = None
    for info in list_running_servers() if list_running_servers else []:
        url = info["url"].rstrip("/")
        try:
            resp = requests.get(
                f"{url}/remote/api/status",
                timeout=2,
                headers={"Authorization": f"token {info.get('token', '')}"},
            )
        except requests.RequestException:
            continue
        if resp.status_code == 200:
            return url, info.get("token", "")
    raise ConnectionFailed(
        f"no Jupyter server with jupyter-remote found: set {ENV_URL} (and {ENV_TOKEN}) or "
        "start JupyterLab with the extension",
        reason="no_server",
        sent=False,
    )


class RemoteClient(HttpApi):
    """One method per /remote/api endpoint, dicts in and out; never retries."""

    auth_scheme = "token"

    def __init__(self, server_url: str | None = None, token: str | None = None, **kw) -> None:
        url, token = discover(server_url, token)
        self.server_url = url
        super().__init__(f"{url}/remote/api", token, lean=True, **kw)

    # -- nodes -------------------------------------------------------------------------
    def status(self) -> dict:
        return self._json("GET", "/status", timeout=30)

    def nodes(self) -> list[dict]:
        return self._json("GET", "/nodes", timeout=30, control=True)["nodes"]

    def add_node(self, url: str, token: str | None = None) -> dict:
        return self._json("POST", "/nodes", json={"url": url, "token": token}, timeout=60)

    def remove_node(self, node_id: str) -> dict:
        return self._json("DELETE", f"/nodes/{node_id}", timeout=30)

    def engine_states(self) -> dict:
        """The in-server gateway's latest state per engine, with its counters."""
        answer = self._json("GET", "/engine-states", timeout=30, control=True)
        if answer.get("enabled") is False:
            raise NotFound(
                answer.get("message", "the engine-state gateway is off"), reason="gateway_off"
            )
        return answer

    # -- executions --------------------------------------------------------------------
    def execute(self, *, echo: bool = False, **body) -> Execution:
        """Send one execution; its handle (`wait()`, `cancel()`, `result`). With `echo`,
        `wait()` writes its output to stdout/stderr and the notebook as it comes."""
        return Execution.submit(self, body, echo)

    def execute_stream(self, **body) -> ExecutionStream:
        """Run one execution; its events as they arrive (started ... the first exit)."""
        resp = self._post_stream("/executions", body, request_timeout(body.get("timeout")))
        what = f"execution {body.get('execution_id', '')}".strip()
        return ExecutionStream(self._events(resp, what), resp.close)

    def execution(self, execution_id: str) -> dict:
        return self._json("GET", f"/executions/{execution_id}")

    def execution_events(self, execution_id: str, follow: bool = True) -> ExecutionStream:
        """An execution's events again from the start, from its node's log; with `follow`,
        live to its end (%remote_output, a reloaded page)."""
        params = {"offset": 0, "follow": int(follow)}
        path = f"/executions/{execution_id}/events"
        resp = self._request("GET", path, params=params, stream=True, timeout=request_timeout(None))
        return ExecutionStream(self._events(resp, f"execution {execution_id}"), resp.close)

    def executions(self, kernel_id: str | None = None, limit: int = 100) -> list[dict]:
        params = {"limit": limit, **({"kernel_id": kernel_id} if kernel_id else {})}
        return self._json("GET", "/executions", params=params)["executions"]

    def cancel(self, execution_id: str, signal: str = "SIGTERM") -> dict:
        return self._json(
            "POST",
            f"/executions/{execution_id}/cancel",
            json={"signal": signal},
            timeout=60,
            control=True,
        )

    def create_session(self, **body) -> dict:
        """A session of one's own (owner, image, node?, limits) on a node the pool picks."""
        return self._json("POST", "/sessions", json=body, timeout=120)

    def delete_sessions(self, owner: str) -> list[dict]:
        return self._json("DELETE", f"/sessions/{owner}", timeout=120)["removed"]

    def kernel_sessions(self, kernel_id: str) -> dict:
        """{"sessions": [...], "known_kernel": whether this server started the kernel}."""
        return self._json("GET", f"/kernels/{kernel_id}/sessions")

    def cleanup_kernel(self, kernel_id: str) -> list[dict]:
        return self._json("DELETE", f"/kernels/{kernel_id}/sessions", timeout=120)["removed"]

    # -- jobs --------------------------------------------------------------------------
    def submit_job(self, **body) -> dict:
        return self._json("POST", "/jobs", json=body, timeout=120)

    def jobs(self) -> list[dict]:
        return self._json("GET", "/jobs", control=True)["jobs"]

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{job_id}", control=True)

    def wait_job(self, job_id: str, timeout: float = 30) -> dict:
        """Long-poll: the job once it has ended, or its state after `timeout` seconds."""
        return self._json(
            "GET",
            f"/jobs/{job_id}/wait",
            params={"timeout": int(timeout)},
            timeout=timeout + 30,
            control=True,
        )

    def stop_job(self, job_id: str) -> dict:
        return self._json("POST", f"/jobs/{job_id}/stop", json={}, timeout=120)

    def delete_job(self, job_id: str, force: bool = False) -> dict:
        """Delete a final job with its logs and saved outputs, on its nodes and here."""
        params = {"force": "1"} if force else None
        return self._json("DELETE", f"/jobs/{job_id}", params=params, timeout=180)

    def job_logs(
        self, job_id: str, task: int = 0, offset: int = 0, follow: bool = False
    ) -> Iterator[bytes]:
        params = {"task": task, "offset": offset, "follow": int(follow)}
        resp = self._request("GET", f"/jobs/{job_id}/logs", params=params, stream=True)
        return stream_chunks(resp, f"logs of job {job_id}")

    # -- file transfers (kernel/transfers.py) ------------------------------------------
    def put_files(
        self,
        owner: str,
        local: str,
        remote: str = ".",
        image: str | None = None,
        progress: bool | None = None,
    ) -> dict:
        """Send a local file or directory into the owner's session; streamed, never buffered."""
        from jupyter_remote.kernel.transfers import upload_body

        body, bar = upload_body(local, remote, progress)
        params = {"path": remote, **({"image": image} if image else {})}
        try:
            return self._json("PUT", f"/sessions/{owner}/files", params=params, data=body)
        finally:
            bar.close()

    def get_files(
        self,
        owner: str,
        remote: str,
        local: str = ".",
        image: str | None = None,
        progress: bool | None = None,
    ) -> list[str]:
        """Fetch a file or directory from the owner's session to `local`; the names written."""
        from jupyter_remote.kernel.transfers import download_into

        params = {"path": remote, **({"image": image} if image else {})}
        resp = self._request("GET", f"/sessions/{owner}/files", params=params, stream=True)
        return download_into(resp, local, f"get {remote}", progress)

    def get_output(
        self,
        job_id: str,
        task: int,
        output: str | None = None,
        local: str = ".",
        progress: bool | None = None,
    ) -> list[str]:
        """Fetch a job task's saved output (its path or name) to `local`."""
        from jupyter_remote.kernel.transfers import download_into

        params = {"path": output} if output else {}
        path = f"/jobs/{job_id}/tasks/{task}/outputs"
        resp = self._request("GET", path, params=params, stream=True)
        return download_into(resp, local, f"get {output or 'output'}", progress)


_readers = Workers("stream-reader")


class ExecutionStream:
    """An execution's events, read on a thread of their own, ending at the first exit event.

    The first exit event is the result: anything after it (a broken connection's second
    exit) is read and dropped, never handed on. Reading on a thread lets the kernel's
    interrupt stop the caller without closing the stream, so the caller can cancel the
    command and keep reading the same stream to the real exit.
    """

    def __init__(self, events: Iterator[dict], close: Callable[[], None] = lambda: None) -> None:
        self.exit: dict | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._close = close
        _readers.run(lambda: self._read(events))

    def _read(self, events: Iterator[dict]) -> None:
        try:
            for event in events:
                self._queue.put((event, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, if it still reads
            self._queue.put((None, exc))
        else:
            self._queue.put((None, None))

    def next(self, timeout: float | None = None) -> dict | None:
        """The next event; None once the stream is over; queue.Empty after `timeout` s."""
        if self.exit is not None:
            return None
        event, error = self._queue.get(timeout=timeout)
        if error is not None:
            self._queue.put((None, error))  # it stays the answer to every later call
            raise error
        if event is None:
            self._queue.put((None, None))
            return None
        if event.get("event") == "exit":
            self.exit = event
        return event

    def __iter__(self) -> ExecutionStream:
        return self

    def __next__(self) -> dict:
        event = self.next()
        if event is None:
            raise StopIteration
        return event

    def close(self) -> None:
        """Stop reading, at once: closing the connection waits for a read in progress (the
        socket reader's lock), so it is done on a thread of its own."""
        threading.Thread(target=self._close, daemon=True).start()


__all__ = ["ExecutionStream", "RemoteClient", "RemoteError", "discover"]
