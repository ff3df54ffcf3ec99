"""The agent API as an OpenAPI 3.1 document: its paths table.

Request bodies come from the pydantic models of bodies.py (so the document and the
validation cannot disagree). Responses are documented by their top-level shape and allow
more fields: clients ignore what they do not know.
"""

from __future__ import annotations

from functools import lru_cache

from jupyter_remote.protocol import openapi as oa
from jupyter_remote.protocol.bodies import (
    CancelBody,
    ExecutionBody,
    JobBody,
    LegacyExecuteBody,
    SessionBody,
)
from jupyter_remote.protocol.common import ID_PATTERN
from jupyter_remote.protocol.queries import PageQuery, query_parameters

BODIES = (ExecutionBody, SessionBody, JobBody, CancelBody, LegacyExecuteBody)

OBJECTS = {"type": "array", "items": {"type": "object"}}
SHAPES = {
    "Info": oa.obj(["node_id", "api_version"], node_id=oa.STRING),
    "Health": oa.obj(["status", "healthy"], status=oa.STRING, healthy={"type": "boolean"}),
    "Resources": oa.obj(["node_id"], node_id=oa.STRING),
    "WhoAmI": oa.obj(
        ["tenant", "operator", "quota", "use"],
        tenant={"type": ["string", "null"]},
        operator={"type": "boolean"},
        quota={"type": "object"},
        use={"type": "object"},
    ),
    "Session": oa.obj(["session_id"], session_id=oa.STRING),
    "SessionList": oa.obj(["sessions"], sessions=OBJECTS),
    "Execution": oa.obj(["execution_id", "status"], execution_id=oa.STRING),
    "ExecutionList": oa.obj(["executions"], executions=OBJECTS, next=oa.NEXT),
    "Job": oa.obj(["job_id", "status", "tasks"], job_id=oa.STRING, tasks=OBJECTS),
    "JobList": oa.obj(["jobs"], jobs=OBJECTS, next=oa.NEXT),
    "Transfer": oa.obj(path=oa.STRING, size={"type": "integer"}),
    "ExecuteResult": oa.obj(output=oa.STRING, returncode={"type": ["integer", "null"]}),
    "Document": {"type": "object", "additionalProperties": True},
}


def _json(status: str, name: str, what: str) -> dict:
    return {status: {"description": what, **oa.json_content(oa.ref(name))}}


def _stream(what: str, media: str = oa.NDJSON) -> dict:
    return {"200": {"description": what, "content": {media: {"schema": oa.STRING}}}}


def _op(summary: str, responses: dict, body: str | None = None, params=()) -> dict:
    op = {
        "summary": summary,
        "parameters": list(params),
        "responses": {
            **responses,
            "default": {
                "description": "an error (4xx: bad input, unknown id, conflict, too large)",
                **oa.json_content(oa.ref("Error")),
            },
        },
    }
    if body:
        op["requestBody"] = {"required": True, **oa.json_content(oa.ref(body))}
    return op


def _path(name: str) -> dict:
    schema = {"type": "string", "pattern": ID_PATTERN}
    return {"name": name, "in": "path", "required": True, "schema": schema}


PATHS = {
    "/v1": {"get": _op("node id and API version", _json("200", "Info", "the node"))},
    "/v1/health": {"get": _op("health checks", _json("200", "Health", "always 200"))},
    "/v1/resources": {"get": _op("resource sample", _json("200", "Resources", "the sample"))},
    "/v1/openapi.json": {"get": _op("this document", _json("200", "Document", "OpenAPI 3.1"))},
    "/v1/whoami": {
        "get": _op(
            "the caller: its tenant (null: the operator), quota and use",
            _json("200", "WhoAmI", "the caller"),
        )
    },
    "/v1/sessions": {
        "get": _op("sessions", _json("200", "SessionList", "every session")),
        "post": _op("create a session", _json("201", "Session", "created"), "SessionBody"),
    },
    "/v1/sessions/{session_id}": {
        "get": _op("one session", _json("200", "Session", "it"), params=[_path("session_id")]),
        "delete": _op(
            "delete a session", _json("200", "Session", "removed"), params=[_path("session_id")]
        ),
    },
    "/v1/executions": {
        "get": _op(
            "a page of executions (?limit, ?before=the last page's next)",
            _json("200", "ExecutionList", "newest first, and next"),
            params=query_parameters(PageQuery),
        ),
        "post": _op(
            "run once; the answer streams its events (started, stdout, stderr, ..., exit)",
            _stream("NDJSON events, one per line"),
            "ExecutionBody",
        ),
    },
    "/v1/executions/{execution_id}": {
        "get": _op("one execution", _json("200", "Execution", "it"), params=[_path("execution_id")])
    },
    "/v1/executions/{execution_id}/events": {
        "get": _op(
            "its events from an offset",
            _stream("NDJSON events"),
            params=[_path("execution_id"), oa.OFFSET, oa.FOLLOW],
        )
    },
    "/v1/executions/{execution_id}/cancel": {
        "post": _op(
            "signal it",
            _json("200", "Execution", "the execution"),
            "CancelBody",
            [_path("execution_id")],
        )
    },
    "/v1/jobs": {
        "get": _op(
            "a page of jobs (?limit, ?before), or the changes since a version (long-poll up "
            "to `wait` seconds)",
            _json("200", "JobList", "jobs newest first, next, epoch and version"),
            params=[
                *query_parameters(PageQuery),
                oa.query("since", oa.COUNT, "version already seen"),
                oa.query("wait", {"type": "integer", "minimum": 0, "maximum": 60}, "seconds"),
            ],
        ),
        "post": _op("submit a job", _json("201", "Job", "accepted"), "JobBody"),
    },
    "/v1/jobs/{job_id}": {
        "get": _op("one job", _json("200", "Job", "it"), params=[_path("job_id")]),
        "delete": _op(
            "delete a finished job: its record, logs and saved outputs (409 while it runs; "
            "its id stays refused for re-submission)",
            _json("200", "Job", "the job as it was, with deleted: true"),
            params=[_path("job_id")],
        ),
    },
    "/v1/jobs/{job_id}/logs": {
        "get": _op(
            "a task's log",
            _stream("the log text", "text/plain"),
            params=[
                _path("job_id"),
                oa.query("task", oa.COUNT, "task index"),
                oa.OFFSET,
                oa.FOLLOW,
            ],
        )
    },
    "/v1/jobs/{job_id}/stop": {
        "post": _op("stop a job", _json("200", "Job", "stopping"), params=[_path("job_id")])
    },
    "/v1/sessions/{session_id}/files": {
        "get": _op(
            "a tar stream of a path in the session's container (docs/agent-api.md#files)",
            _stream("the tar", oa.TAR),
            params=[_path("session_id"), oa.PATH],
        ),
        "put": {
            **_op(
                "put a tar (one top-level entry) at a path; checked whole before any write",
                _json("200", "Transfer", "written"),
                params=[_path("session_id"), oa.PATH],
            ),
            "requestBody": {"required": True, "content": {oa.TAR: {"schema": oa.BINARY}}},
        },
    },
    "/v1/jobs/{job_id}/outputs": {
        "get": _op(
            "a task's saved output as a tar stream",
            _stream("the tar", oa.TAR),
            params=[
                _path("job_id"),
                oa.query("task", oa.COUNT, "task index"),
                oa.query("path", {"type": "string"}, "the output's path or name"),
            ],
        )
    },
    "/execute": {
        "post": _op(
            "seed 000's call: run in the default session, answer when done",
            _json("200", "ExecuteResult", "output and returncode"),
            "LegacyExecuteBody",
        )
    },
}


@lru_cache(maxsize=1)
def agent_openapi() -> dict:
    """The agent API's OpenAPI 3.1 oa.document (built once; treat it as read-only)."""
    from jupyter_remote._version import __version__

    return oa.document(
        "jupyter-remote executor agent",
        __version__,
        "See docs/agent-api.md. Every call needs `Authorization: Bearer TOKEN`.",
        {**oa.model_schemas(BODIES), **SHAPES},
        PATHS,
        {"bearer": {"type": "http", "scheme": "bearer"}},
        [{"bearer": []}],
    )
