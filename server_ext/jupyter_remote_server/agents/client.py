"""The server's client of one agent: one coroutine per endpoint (docs/agent-api.md).

Calls answered whole return dicts; streams (execution events, job logs, tar files) return
an Answer to iterate chunk by chunk. Liveness calls (health, resources, the job change feed,
the panel's quick session list) use the node's own liveness connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from jupyter_remote.http.api import request_timeout
from jupyter_remote_server.agents.http import Answer, NodeHttp

UPLOAD_TIMEOUT = 24 * 3600.0  # an upload's most seconds of silence from the agent


class NodeClient(NodeHttp):
    """The agent API of one node, on the event loop."""

    async def info(self) -> dict:
        return await self.json("GET", "/v1", timeout=30)

    async def health(self, timeout: float = 30) -> dict:
        return await self.json("GET", "/v1/health", timeout=timeout, control=True)

    async def resources(self, timeout: float = 30) -> dict:
        return await self.json("GET", "/v1/resources", timeout=timeout, control=True)

    # -- sessions ----------------------------------------------------------------------
    async def create_session(self, **spec) -> dict:
        return await self.json("POST", "/v1/sessions", json=spec, timeout=120)

    async def sessions(self, timeout: float | None = None, control: bool = False) -> list[dict]:
        """Every session on the node; `control` for a quick look that never waits behind
        the node's busy work connections (the panel's list)."""
        answer = await self.json("GET", "/v1/sessions", timeout=timeout, control=control)
        return answer["sessions"]

    async def delete_session(self, session_id: str) -> dict:
        return await self.json("DELETE", f"/v1/sessions/{session_id}", timeout=120)

    # -- executions --------------------------------------------------------------------
    async def open_execution(self, execution_id: str, body: dict, what: str) -> Answer:
        """Start an execution; the answer streams its events (a refusal is raised here)."""
        return await self.open(
            "POST",
            "/v1/executions",
            json={"execution_id": execution_id, **body},
            timeout=request_timeout(body.get("timeout")),
            what=what,
        )

    async def execution(self, execution_id: str, timeout: float | None = None) -> dict:
        return await self.json("GET", f"/v1/executions/{execution_id}", timeout=timeout)

    async def open_execution_events(
        self, execution_id: str, offset: int, follow: bool, what: str
    ) -> Answer:
        params = {"offset": offset, "follow": int(follow)}
        path = f"/v1/executions/{execution_id}/events"
        return await self.open("GET", path, params=params, what=what)

    async def cancel(self, execution_id: str, signal: str = "SIGTERM") -> dict:
        path = f"/v1/executions/{execution_id}/cancel"
        return await self.json("POST", path, json={"signal": signal}, timeout=60)

    # -- jobs --------------------------------------------------------------------------
    async def submit_job(self, **body) -> dict:
        return await self.json("POST", "/v1/jobs", json=body, timeout=120)

    async def job_changes(self, since: int, wait: float = 25) -> dict:
        """Jobs changed after feed version `since`, waiting up to `wait` s for one."""
        params = {"since": since, "wait": int(wait)}
        return await self.json("GET", "/v1/jobs", params=params, timeout=wait + 30, control=True)

    async def job(self, job_id: str) -> dict:
        return await self.json("GET", f"/v1/jobs/{job_id}")

    async def stop_job(self, job_id: str) -> dict:
        return await self.json("POST", f"/v1/jobs/{job_id}/stop", timeout=120)

    async def delete_job(self, job_id: str) -> dict:
        return await self.json("DELETE", f"/v1/jobs/{job_id}", timeout=120)

    async def open_job_logs(
        self, job_id: str, task: int, offset: int, follow: bool, what: str
    ) -> Answer:
        params = {"task": task, "offset": offset, "follow": int(follow)}
        timeout = None if follow else 60  # a log read from a frozen node must not hang
        path = f"/v1/jobs/{job_id}/logs"
        return await self.open("GET", path, params=params, timeout=timeout, what=what)

    # -- transfers ---------------------------------------------------------------------
    async def open_files(self, session_id: str, path: str, what: str) -> Answer:
        """A tar stream of a path in a session's container (404 when it is missing)."""
        url = f"/v1/sessions/{session_id}/files"
        return await self.open("GET", url, params={"path": path}, what=what)

    async def put_files(
        self, session_id: str, path: str, body: AsyncIterable[bytes], length: str | None
    ) -> Answer:
        """A tar stream into a session's container, sent as `body` yields it."""
        headers = {"Content-Type": "application/x-tar"}
        if length:  # passed on as it came: no chunked framing
            headers["Content-Length"] = length
        return await self.open(
            "PUT",
            f"/v1/sessions/{session_id}/files",
            params={"path": path},
            data=body,
            headers=headers,
            timeout=UPLOAD_TIMEOUT,
        )

    async def open_job_outputs(self, job_id: str, task: int, path: str | None, what: str) -> Answer:
        """A saved output of a job's task as a tar stream."""
        params = {"task": task, **({"path": path} if path else {})}
        return await self.open("GET", f"/v1/jobs/{job_id}/outputs", params=params, what=what)
