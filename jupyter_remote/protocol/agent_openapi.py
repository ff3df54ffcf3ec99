"""The agent API as an OpenAPI 3.1 document, generated from the request models.

Request bodies come from the pydantic models (so the document and the validation cannot
disagree); the paths table below is written once. Responses are documented by their
top-level shape and allow more fields: clients ignore what they do not know.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic.json_schema import models_json_schema

from jupyter_remote.protocol.bodies import (
    CancelBody,
    ExecutionBody,
    JobBody,
    LegacyExecuteBody,
    SessionBody,
)
from jupyter_remote.protocol.common import ID_PATTERN
from jupyter_remote.protocol.queries import PageQuery, query_parameters

REF = "#/components/schemas/{model}"
NDJSON = "application/x-ndjson"
BODIES = (ExecutionBody, SessionBody, JobBody, CancelBody, LegacyExecuteBody)

ERROR = {
    "type": "object",
    "description": "Every error: what went wrong and a stable reason word (bad_FIELD, ...).",
    "required": ["message", "reason"],
    "properties": {
        "message": {"type": "string"},
        "reason": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "rule": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}


def _obj(*required: str, **props: dict) -> dict:
    return {"type": "object", "required": list(required), "properties": props}


_ARRAY_OF_OBJECTS = {"type": "array", "items": {"type": "object"}}
_NEXT = {"type": ["string", "null"], "description": "?before= for the next page; null: last"}
SHAPES = {
    "Info": _obj("node_id", "api_version", node_id={"type": "string"}),
    "Health": _obj("status", "healthy", status={"type": "string"}, healthy={"type": "boolean"}),
    "Resources": _obj("node_id", node_id={"type": "string"}),
    "Session": _obj("session_id", session_id={"type": "string"}),
    "SessionList": _obj("sessions", sessions=_ARRAY_OF_OBJECTS),
    "Execution": _obj("execution_id", "status", execution_id={"type": "string"}),
    "ExecutionList": _obj("executions", executions=_ARRAY_OF_OBJECTS, next=_NEXT),
    "Job": _obj("job_id", "status", "tasks", job_id={"type": "string"}, tasks=_ARRAY_OF_OBJECTS),
    "JobList": _obj("jobs", jobs=_ARRAY_OF_OBJECTS, next=_NEXT),
    "Transfer": _obj("path", "size", path={"type": "string"}, size={"type": "integer"}),
    "ExecuteResult": _obj(
        "output",
        "returncode",
        output={"type": "string"},
        returncode={"type": ["integer", "null"]},
    ),
}


def _ref(name: str) -> dict:
    return {"$ref": REF.format(model=name)}


def _json(status: str, name: str, what: str) -> dict:
    return {status: {"description": what, "content": {"application/json": {"schema": _ref(name)}}}}


def _stream(what: str, media: str = NDJSON) -> dict:
    schema = {"type": "string"}
    return {"200": {"description": what, "content": {media: {"schema": schema}}}}


def _op(summary: str, responses: dict, body: str | None = None, params=()) -> dict:
    op = {
        "summary": summary,
        "parameters": list(params),
        "responses": {
            **responses,
            "default": {
                "description": "an error (4xx: bad input, unknown id, conflict, too large)",
                "content": {"application/json": {"schema": _ref("Error")}},
            },
        },
    }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return op


def _path(name: str) -> dict:
    schema = {"type": "string", "pattern": ID_PATTERN}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict, what: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": what}


_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**53}
_FLAG = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}
OFFSET = _query("offset", _COUNT, "bytes of the log already read")
FOLLOW = _query("follow", _FLAG, "keep the stream open until the end")

TAR = {"type": "string", "format": "binary"}
PATH = {
    **_query("path", {"type": "string", "minLength": 1}, "absolute, or relative to the workdir"),
    "required": True,
}

PATHS = {
    "/v1": {"get": _op("node id and API version", _json("200", "Info", "the node"))},
    "/v1/health": {"get": _op("health checks", _json("200", "Health", "always 200"))},
    "/v1/resources": {"get": _op("resource sample", _json("200", "Resources", "the sample"))},
    "/v1/openapi.json": {"get": _op("this document", _json("200", "Document", "OpenAPI 3.1"))},
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
            params=[_path("execution_id"), OFFSET, FOLLOW],
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
                _query("since", _COUNT, "version already seen"),
                _query("wait", {"type": "integer", "minimum": 0, "maximum": 60}, "seconds"),
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
            params=[_path("job_id"), _query("task", _COUNT, "task index"), OFFSET, FOLLOW],
        )
    },
    "/v1/jobs/{job_id}/stop": {
        "post": _op("stop a job", _json("200", "Job", "stopping"), params=[_path("job_id")])
    },
    "/v1/sessions/{session_id}/files": {
        "get": _op(
            "a tar stream of a path in the session's container (docs/agent-api.md#files)",
            _stream("the tar", "application/x-tar"),
            params=[_path("session_id"), PATH],
        ),
        "put": {
            **_op(
                "put a tar (one top-level entry) at a path; checked whole before any write",
                _json("200", "Transfer", "written"),
                params=[_path("session_id"), PATH],
            ),
            "requestBody": {"required": True, "content": {"application/x-tar": {"schema": TAR}}},
        },
    },
    "/v1/jobs/{job_id}/outputs": {
        "get": _op(
            "a task's saved output as a tar stream",
            _stream("the tar", "application/x-tar"),
            params=[
                _path("job_id"),
                _query("task", _COUNT, "task index"),
                _query("path", {"type": "string"}, "the output's path or name"),
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
    """The agent API's OpenAPI 3.1 document (built once; treat it as read-only)."""
    _, defs = models_json_schema([(m, "validation") for m in BODIES], ref_template=REF)
    schemas = {**defs.get("$defs", {}), "Error": ERROR}
    for name, shape in {**SHAPES, "Document": {"type": "object"}}.items():
        schemas[name] = {**shape, "additionalProperties": True}
    from jupyter_remote._version import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jupyter-remote executor agent",
            "version": __version__,
            "description": "See docs/agent-api.md. Every call needs `Authorization: Bearer TOKEN`.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    }
