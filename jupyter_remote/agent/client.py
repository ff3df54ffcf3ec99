"""The agent's own Python client (blocking): one method per endpoint, dicts in and out.

For scripts and tests that talk to an agent directly (scripts/demo.py, tests/); the Jupyter
server speaks to agents with its async client (jupyter_remote_server.agents.client).
"""

from __future__ import annotations

from collections.abc import Iterator

import requests

from jupyter_remote.http.api import HttpApi, request_timeout, stream_chunks


class AgentClient(HttpApi):
    """The agent's versioned API (docs/agent-api.md) over one pooled session."""

    def info(self) -> dict:
        return self._json("GET", "/v1", timeout=30)

    def health(self, timeout: float = 30) -> dict:
        return self._json("GET", "/v1/health", timeout=timeout, control=True)

    def resources(self, timeout: float = 30) -> dict:
        return self._json("GET", "/v1/resources", timeout=timeout, control=True)

    # -- sessions ----------------------------------------------------------------------
    def create_session(self, **spec) -> dict:
        return self._json("POST", "/v1/sessions", json=spec, timeout=120)

    def sessions(self, timeout: float | None = None, control: bool = False) -> list[dict]:
        """Every session on the node; `control` for a quick look that never waits behind
        the node's busy work slots (the panel's list)."""
        path = "/v1/sessions"
        return self._json("GET", path, timeout=timeout, control=control)["sessions"]

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

    def execution(self, execution_id: str, timeout: float | None = None) -> dict:
        return self._json("GET", f"/v1/executions/{execution_id}", timeout=timeout)

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

    def cancel(self, execution_id: str, signal: str = "SIGTERM") -> dict:
        path = f"/v1/executions/{execution_id}/cancel"
        return self._json("POST", path, json={"signal": signal}, timeout=60)

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

    def delete_job(self, job_id: str) -> dict:
        return self._json("DELETE", f"/v1/jobs/{job_id}", timeout=120)

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
        timeout = None if follow else 60  # a log read from a frozen node must not hang
        return self._request(
            "GET", f"/v1/jobs/{job_id}/logs", stream=True, params=params, timeout=timeout
        )

    def open_execution_events(
        self, execution_id: str, offset: int = 0, follow: bool = False
    ) -> requests.Response:
        params = {"offset": offset, "follow": int(follow)}
        path = f"/v1/executions/{execution_id}/events"
        return self._request("GET", path, stream=True, params=params)

    # -- transfers ---------------------------------------------------------------------
    def open_files(self, session_id: str, path: str) -> requests.Response:
        """A tar stream of a path in a session's container (404 JSON when it is missing)."""
        return self._request(
            "GET", f"/v1/sessions/{session_id}/files", stream=True, params={"path": path}
        )

    def open_job_outputs(self, job_id: str, task: int = 0, path: str | None = None):
        """A saved output of a job's task as a tar stream."""
        params = {"task": task, **({"path": path} if path else {})}
        return self._request("GET", f"/v1/jobs/{job_id}/outputs", stream=True, params=params)
