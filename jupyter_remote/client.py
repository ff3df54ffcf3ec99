"""Client of the server extension's API (/remote/api), used by magics, widgets and scripts.

It finds the server the way a kernel should: the URL and token that the server put in
the kernel's environment, else a running Jupyter server that answers /remote/api/status.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import requests

from jupyter_remote.errors import ConnectionFailed, RemoteError
from jupyter_remote.http_api import HttpApi, request_timeout, stream_chunks

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
        super().__init__(f"{url}/remote/api", token, **kw)

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
        return self._json("GET", "/engine-states", timeout=30, control=True)

    # -- executions --------------------------------------------------------------------
    def execute_stream(self, **body) -> Iterator[dict]:
        """Run one execution; its events as they arrive (started ... exit)."""
        resp = self._request(
            "POST",
            "/executions",
            json=body,
            stream=True,
            timeout=request_timeout(body.get("timeout")),
        )
        return self._events(resp, f"execution {body.get('execution_id', '')}".strip())

    def execution(self, execution_id: str) -> dict:
        return self._json("GET", f"/executions/{execution_id}")

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

    def job_logs(
        self, job_id: str, task: int = 0, offset: int = 0, follow: bool = False
    ) -> Iterator[bytes]:
        params = {"task": task, "offset": offset, "follow": int(follow)}
        resp = self._request("GET", f"/jobs/{job_id}/logs", params=params, stream=True)
        return stream_chunks(resp, f"logs of job {job_id}")


__all__ = ["RemoteClient", "RemoteError", "discover"]
