"""The OpenAPI 3.1 document of the server API (/remote/api), made from the protocol models.

Request bodies are the pydantic models' JSON Schemas; the paths table below is written
once, for every route in jupyter_remote_server/handlers.py. Responses give their top-level
shape only and allow more fields (clients ignore what they do not know).
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from jupyter_remote.protocol.common import JobStatus, TaskStatus
from jupyter_remote.protocol.queries import ExecutionPageQuery, PageQuery, query_parameters
from jupyter_remote.protocol.server_bodies import (
    CancelBody,
    JoinBody,
    NodeAddBody,
    ServerExecutionBody,
    ServerJobBody,
    SessionCreateBody,
    TaskBody,
)

PREFIX = "/remote/api"
NDJSON = "application/x-ndjson"
BODIES = (
    NodeAddBody,
    JoinBody,
    ServerExecutionBody,
    CancelBody,
    SessionCreateBody,
    ServerJobBody,
    TaskBody,
)


class Answer(BaseModel):
    """A response: the fields clients rely on; more may come (clients ignore them)."""

    model_config = ConfigDict(extra="allow")


class Usage(Answer):
    percent: float | None = None


class Node(Answer):
    """A node of the pool (GET nodes, nodes/{id}); never its token."""

    node_id: str
    url: str
    source: Literal["config", "api", "join"]
    state: Literal["unknown", "healthy", "busy", "unhealthy", "suspect", "lost"]
    reason: str
    last_seen_at: float | None
    warnings: list[str]
    cpu: Usage | None
    memory: Usage | None
    disk: Usage | None
    running_executions: int
    inflight: int
    images: list[str]


class Task(Answer):
    index: int
    name: str
    status: TaskStatus
    service: bool
    node_id: str | None
    agent_job_id: str | None
    returncode: int | None


class Job(Answer):
    """A server job (GET jobs, jobs/{id}, its wait and stop)."""

    job_id: str
    name: str
    status: JobStatus
    elapsed: float
    autostop: bool
    degraded: bool
    tasks_done: int
    tasks_total: int
    tasks_lost: int
    tasks: list[Task]


class Engine(Answer):
    engine_id: str
    age_ms: int
    stale: bool
    latency_pred_ms: float
    pending_tokens_total: int
    kv_cache_utilization: float | None


class EngineStates(Answer):
    """GET engine-states: the gateway's table, or enabled false and why."""

    enabled: bool
    message: str | None = None
    engines: list[Engine] | None = None


class SessionNotebook(Answer):
    path: str
    name: str


class RunningCell(Answer):
    """The cell running now; execution_id null when it was not started through this server."""

    execution_id: str | None
    started_at: float | None
    elapsed: float | None


class SessionView(Answer):
    """A session container as the Lab panel shows it: whose, where, how busy."""

    session_id: str
    owner: str
    kind: Literal["kernel", "client"]
    notebook: SessionNotebook | None
    node_id: str
    image: str
    path: Literal["runner", "exec"] | None
    state: Literal["idle", "running", "node unavailable", "gone"]
    reason: str | None
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit: int | None
    running: RunningCell | None
    idle_for: float | None
    created_at: float | None


class SessionList(Answer):
    """GET sessions: every session container this server knows; `now` is the server's clock."""

    sessions: list[SessionView]
    now: float


ANSWERS = (Node, Job, EngineStates, SessionList)


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _obj(**props: dict) -> dict:
    """An object with these required top-level fields; more fields are allowed."""
    return {
        "type": "object",
        "properties": props,
        "required": sorted(props),
        "additionalProperties": True,
    }


ANY: dict = {"type": "object", "additionalProperties": True}
LIST = {"type": "array", "items": ANY}
NODE = _ref(Node)
JOB = _ref(Job)
EXECUTION = _obj(execution_id={"type": "string"}, status={"type": "string"})
REMOVED = _obj(removed=LIST)
NEXT = {"type": ["string", "null"], "description": "?before= for the next page; null: last"}
PAGE_OF_EXECUTIONS = _obj(executions=LIST, next=NEXT)
PAGE_OF_JOBS = _obj(jobs={"type": "array", "items": JOB}, next=NEXT)


def _query(name: str, schema: dict, about: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": about}


COUNT = {"type": "integer", "minimum": 0}
FLAG = {"type": "string", "enum": ["0", "1", "true", "false", "yes", "no"]}
OFFSET = _query("offset", COUNT, "Byte offset to start from.")
PATH = {**_query("path", {"type": "string", "minLength": 1}, "Container path."), "required": True}
IMAGE = _query("image", {"type": "string"}, "The session's image (the server's default).")
FOLLOW = _query("follow", FLAG, "Keep the stream open until the end (1, true or yes).")
FORCE = _query(
    "force",
    FLAG,
    "1: forget the copies on nodes that do not answer (listed in left_on_nodes) instead "
    "of answering 503.",
)

# path -> method -> (summary, body model, {status: (description, schema or content type)})
PATHS: dict[str, dict[str, tuple]] = {
    "/status": {"get": ("Counts of nodes, jobs and executions", None, {200: ("counts", ANY)})},
    "/engine-states": {
        "get": (
            "Latest state per engine from the in-server gateway",
            None,
            {200: ("", _ref(EngineStates))},
        )
    },
    "/nodes": {
        "get": (
            "The pool's nodes",
            None,
            {200: ("nodes", _obj(nodes={"type": "array", "items": NODE}))},
        ),
        "post": (
            "Add an agent (it must answer now)",
            NodeAddBody,
            {200: ("known already", NODE), 201: ("added", NODE), 409: "duplicate node id"},
        ),
    },
    "/nodes/join": {
        "get": (
            "An agent checks its join token",
            None,
            {200: ("accepted", _obj(join_token={"type": "string"})), 401: "wrong join token"},
        ),
        "post": (
            "An agent joins by itself (Authorization: Bearer JOIN_TOKEN)",
            JoinBody,
            {
                200: ("known already", _obj(node_id={"type": "string"})),
                201: ("joined", _obj(node_id={"type": "string"})),
                401: "wrong join token",
                409: "duplicate node id",
                410: "this agent process's node was removed",
            },
        ),
    },
    "/nodes/{node_id}": {
        "get": ("One node", None, {200: ("node", NODE), 404: "no such node"}),
        "delete": ("Remove a node from the pool", None, {200: ("removed", NODE), 404: ""}),
    },
    "/executions": {
        "get": (
            "A page of executions, newest first (?limit, ?before=the last page's next)",
            None,
            {200: ("executions", PAGE_OF_EXECUTIONS), 400: "bad limit, cursor or parameter"},
            query_parameters(ExecutionPageQuery),
        ),
        "post": (
            "Run a cell; its events as NDJSON, ending in one exit event",
            ServerExecutionBody,
            {
                200: ("events", NDJSON),
                404: "unknown node",
                409: "execution id already received",
                413: "body too large",
                503: "no node can take it now",
            },
        ),
    },
    "/executions/{execution_id}": {
        "get": ("An execution's record", None, {200: ("record", EXECUTION), 404: ""}),
    },
    "/executions/{execution_id}/events": {
        "get": (
            "An execution's events from its node's log (reattach)",
            None,
            {200: ("events", NDJSON), 404: "", 503: "its node does not answer"},
            [OFFSET, FOLLOW],
        ),
    },
    "/executions/{execution_id}/cancel": {
        "post": (
            "Send a signal to a running execution",
            CancelBody,
            {200: ("the node's answer", ANY), 404: "", 503: "its node does not answer"},
        ),
    },
    "/kernels/{kernel_id}/sessions": {
        "get": (
            "A kernel's session containers",
            None,
            {200: ("sessions", _obj(sessions=LIST, known_kernel={"type": "boolean"}))},
        ),
        "delete": ("Remove a kernel's session containers", None, {200: ("removed", REMOVED)}),
    },
    "/sessions": {
        "get": (
            "Every session container this server knows: notebook, node, path, use, cell",
            None,
            {200: ("sessions", _ref(SessionList))},
        ),
        "post": (
            "A session of an API client's own (one per owner and image)",
            SessionCreateBody,
            {
                201: ("session", _obj(session_id={"type": "string"}, node_id={"type": "string"})),
                404: "unknown node",
                409: "the owner's session lives on another node",
                503: "no node can take it now",
            },
        ),
    },
    "/sessions/{owner}": {
        "delete": (
            "Remove an owner's sessions (or, with image, that one)",
            None,
            {200: ("removed", REMOVED), 404: "no such session (with image)"},
            [_query("image", {"type": "string"}, "Remove only the session of this image.")],
        ),
    },
    "/jobs": {
        "get": (
            "A page of jobs, newest first (?limit, ?before=the last page's next)",
            None,
            {200: ("jobs", PAGE_OF_JOBS), 400: "bad limit, cursor or parameter"},
            query_parameters(PageQuery),
        ),
        "post": (
            "Submit a job of tasks spread over the nodes",
            ServerJobBody,
            {201: ("job", JOB), 404: "unknown node", 409: "job id exists", 413: "too large"},
        ),
    },
    "/jobs/{job_id}": {
        "get": ("One job", None, {200: ("job", JOB), 404: ""}),
        "delete": (
            "Delete a final job: its tasks' records, logs and saved outputs on their nodes, "
            "then its record here; its id stays refused",
            None,
            {
                200: ("the job as it was, with deleted true", JOB),
                404: "",
                409: "the job is not final (or a node still removes a container)",
                502: "a node failed to delete its copy; the job is kept",
                503: "a node does not answer; the job is kept",
            },
            [FORCE],
        ),
    },
    "/jobs/{job_id}/wait": {
        "get": (
            "Long-poll until the job ends or `timeout` seconds pass (at most 300)",
            None,
            {200: ("job", JOB), 404: ""},
            [_query("timeout", COUNT, "Seconds (30).")],
        ),
    },
    "/jobs/{job_id}/stop": {"post": ("Stop a job", None, {200: ("job", JOB), 404: ""})},
    "/jobs/{job_id}/logs": {
        "get": (
            "A task's log as text",
            None,
            {
                200: ("log", "text/plain"),
                404: "",
                409: "the task has not started",
                503: "its node does not answer",
            },
            [_query("task", COUNT, "Task index (0)."), OFFSET, FOLLOW],
        ),
    },
    "/sessions/{owner}/files": {
        "get": (
            "A path in the owner's session container, as a tar stream",
            None,
            {200: ("tar", "application/x-tar"), 404: "no session or no such path"},
            [PATH, IMAGE],
        ),
        "put": (
            "Put a tar (one top-level entry) at a path in the owner's session container",
            "application/x-tar",
            {200: ("written", _obj(path={"type": "string"}, size=COUNT)), 404: "", 409: ""},
            [PATH, IMAGE],
        ),
    },
    "/jobs/{job_id}/tasks/{index}/outputs": {
        "get": (
            "A task's saved output (by path or name), as a tar stream",
            None,
            {200: ("tar", "application/x-tar"), 404: "no such job, task or output"},
            [_query("path", {"type": "string"}, "The output's path or name.")],
        ),
    },
}


def _operation(path: str, method: str, entry: tuple) -> dict:
    summary, model, responses, *params = entry
    out: dict = {
        "summary": summary,
        "operationId": method + "_" + re.sub(r"[^a-z_]+", "_", path.strip("/")).strip("_"),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_names(path)
        ]
        + (params[0] if params else []),
        "responses": {},
    }
    if isinstance(model, str):  # a raw body of this media type (tar uploads)
        schema = {"type": "string", "format": "binary"}
        out["requestBody"] = {"required": True, "content": {model: {"schema": schema}}}
    elif model is not None:
        ref = {"$ref": f"#/components/schemas/{model.__name__}"}
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    if path == "/nodes/join":
        out["security"] = [{"joinToken": []}]
    codes = dict(responses)
    if model is not None or params:
        codes.setdefault(400, "bad input: the message names the field and the rule")
    codes.setdefault(403, "not authenticated")
    for code, what in sorted(codes.items()):
        if isinstance(what, str):
            out["responses"][str(code)] = {"description": what or "not found", **ERROR_CONTENT}
            continue
        about, shape = what
        if isinstance(shape, str):
            content = {shape: {"schema": {"type": "string"}}}
        else:
            content = {"application/json": {"schema": shape}}
        out["responses"][str(code)] = {"description": about or "ok", "content": content}
    return out


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


ERROR_CONTENT = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
}


@cache
def openapi() -> dict:
    """The document served at GET /remote/api/openapi.json."""
    _, defs = models_json_schema(
        [(m, "validation") for m in BODIES] + [(m, "serialization") for m in ANSWERS],
        ref_template="#/components/schemas/{model}",
    )
    schemas = defs.get("$defs", {})
    schemas["Error"] = {
        **_obj(message={"type": "string"}, reason={"type": "string"}),
        "description": "Every 4xx answer: the message names the field and the rule.",
    }
    paths = {
        PREFIX + path: {m: _operation(path, m, e) for m, e in methods.items()}
        for path, methods in PATHS.items()
    }
    paths[PREFIX + "/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "get_openapi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": ANY}},
                },
                "403": {"description": "not authenticated", **ERROR_CONTENT},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "jupyter-remote server API",
            "version": "1",
            "description": "Runs notebook cells and jobs on remote Docker hosts through their "
            "agents. Under the Jupyter server's base_url; see docs/rest-api.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"jupyterToken": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "jupyterToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "token JUPYTER_TOKEN (or the browser's cookie plus XSRF)",
                },
                "joinToken": {"type": "http", "scheme": "bearer"},
            },
        },
        "paths": paths,
    }


if __name__ == "__main__":  # the panel's build writes its types from this
    import json
    import sys

    with open(sys.argv[1], "w") if len(sys.argv) > 1 else sys.stdout as out:
        json.dump(openapi(), out, indent=1, sort_keys=True)
        out.write("\n")
