"""The OpenAPI 3.1 document of the server API (/remote/api): its paths table.

Request bodies are the models of server_bodies.py, answers those of server_answers.py; the
table below is written once, for every route in jupyter_remote_server/routes.py.
"""

from __future__ import annotations

import re
from functools import cache

from jupyter_remote.protocol.openapi import (
    ANY,
    BINARY,
    COUNT,
    FLAG,
    FOLLOW,
    LIST,
    NDJSON,
    NEXT,
    OFFSET,
    PATH,
    STRING,
    TAR,
    document,
    json_content,
    model_schemas,
    obj,
    query,
    ref,
)
from jupyter_remote.protocol.queries import (
    ExecutionPageQuery,
    NotebookCellsQuery,
    PageQuery,
    query_parameters,
)
from jupyter_remote.protocol.server_answers import (
    ANSWERS,
    EngineStates,
    Job,
    Node,
    SessionList,
)
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
BODIES = (
    NodeAddBody,
    JoinBody,
    ServerExecutionBody,
    CancelBody,
    SessionCreateBody,
    ServerJobBody,
    TaskBody,
)

NODE = ref(Node)
JOB = ref(Job)
EXECUTION = obj(execution_id=STRING, status=STRING)
REMOVED = obj(removed=LIST)
PAGE_OF_EXECUTIONS = obj(executions=LIST, next=NEXT)
PAGE_OF_JOBS = obj(jobs={"type": "array", "items": JOB}, next=NEXT)
IMAGE = query("image", STRING, "The session's image (the server's default).")
FORCE = query(
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
            {200: ("", ref(EngineStates))},
        )
    },
    "/nodes": {
        "get": (
            "The pool's nodes",
            None,
            {200: ("nodes", obj(nodes={"type": "array", "items": NODE}))},
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
            {
                200: (
                    "accepted; `tenant`: the name the agent files this server's credential under",
                    obj(join_token=STRING, tenant=STRING),
                ),
                401: "wrong join token",
            },
        ),
        "post": (
            "An agent joins by itself (Authorization: Bearer JOIN_TOKEN)",
            JoinBody,
            {
                200: ("known already", obj(node_id=STRING)),
                201: ("joined", obj(node_id=STRING)),
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
    "/notebook-cells": {
        "get": (
            "The latest execution and job of each cell of a notebook (a reloaded page "
            "renders what its cells miss from them)",
            None,
            {
                200: (
                    "cells",
                    obj(
                        path=STRING,
                        cells={
                            "type": "array",
                            "items": obj(
                                cell_id=STRING,
                                execution={"anyOf": [EXECUTION, {"type": "null"}]},
                                job={"anyOf": [JOB, {"type": "null"}]},
                            ),
                        },
                    ),
                ),
                400: "no or bad path",
            },
            query_parameters(NotebookCellsQuery),
        ),
    },
    "/kernels/{kernel_id}/sessions": {
        "get": (
            "A kernel's session containers",
            None,
            {200: ("sessions", obj(sessions=LIST, known_kernel={"type": "boolean"}))},
        ),
        "delete": ("Remove a kernel's session containers", None, {200: ("removed", REMOVED)}),
    },
    "/sessions": {
        "get": (
            "Every session container this server knows: notebook, node, path, use, cell",
            None,
            {200: ("sessions", ref(SessionList))},
        ),
        "post": (
            "A session of an API client's own (one per owner and image)",
            SessionCreateBody,
            {
                201: ("session", obj(session_id=STRING, node_id=STRING)),
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
            [query("image", STRING, "Remove only the session of this image.")],
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
            [query("timeout", COUNT, "Seconds (30).")],
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
            [query("task", COUNT, "Task index (0)."), OFFSET, FOLLOW],
        ),
    },
    "/sessions/{owner}/files": {
        "get": (
            "A path in the owner's session container, as a tar stream",
            None,
            {200: ("tar", TAR), 404: "no session or no such path"},
            [PATH, IMAGE],
        ),
        "put": (
            "Put a tar (one top-level entry) at a path in the owner's session container",
            TAR,
            {200: ("written", obj(path=STRING, size=COUNT)), 404: "", 409: ""},
            [PATH, IMAGE],
        ),
    },
    "/jobs/{job_id}/tasks/{index}/outputs": {
        "get": (
            "A task's saved output (by path or name), as a tar stream",
            None,
            {200: ("tar", TAR), 404: "no such job, task or output"},
            [query("path", STRING, "The output's path or name.")],
        ),
    },
}


def _operation(path: str, method: str, entry: tuple) -> dict:
    summary, model, responses, *params = entry
    out: dict = {
        "summary": summary,
        "operationId": method + "_" + re.sub(r"[^a-z_]+", "_", path.strip("/")).strip("_"),
        "parameters": [
            {"name": part[1:-1], "in": "path", "required": True, "schema": STRING}
            for part in path.split("/")
            if part.startswith("{")
        ]
        + (params[0] if params else []),
        "responses": {},
    }
    if isinstance(model, str):  # a raw body of this media type (tar uploads)
        out["requestBody"] = {"required": True, "content": {model: {"schema": BINARY}}}
    elif model is not None:
        out["requestBody"] = {"required": True, **json_content(ref(model))}
    if path == "/nodes/join":
        out["security"] = [{"joinToken": []}]
    codes = dict(responses)
    if model is not None or params:
        codes.setdefault(400, "bad input: the message names the field and the rule")
    codes.setdefault(403, "not authenticated, or over a quota (reason quota_exceeded)")
    for code, what in sorted(codes.items()):
        if isinstance(what, str):
            out["responses"][str(code)] = {"description": what or "not found", **ERROR}
            continue
        about, shape = what
        if isinstance(shape, str):
            content = {"content": {shape: {"schema": STRING}}}
        else:
            content = json_content(shape)
        out["responses"][str(code)] = {"description": about or "ok", **content}
    return out


ERROR = json_content(ref("Error"))
OPENAPI_ITSELF = {
    "get": {
        "summary": "This document",
        "operationId": "get_openapi",
        "responses": {
            "200": {"description": "OpenAPI 3.1", **json_content(ANY)},
            "403": {"description": "not authenticated", **ERROR},
        },
    }
}


@cache
def openapi() -> dict:
    """The document served at GET /remote/api/openapi.json."""
    paths = {
        PREFIX + path: {m: _operation(path, m, e) for m, e in methods.items()}
        for path, methods in PATHS.items()
    }
    return document(
        "jupyter-remote server API",
        "1",
        "Runs notebook cells and jobs on remote Docker hosts through their agents. Under the "
        "Jupyter server's base_url; see docs/rest-api.md.",
        model_schemas(BODIES, ANSWERS),
        {**paths, PREFIX + "/openapi.json": OPENAPI_ITSELF},
        {
            "jupyterToken": {
                "type": "apiKey",
                "in": "header",
                "name": "Authorization",
                "description": "token JUPYTER_TOKEN (or the browser's cookie plus XSRF)",
            },
            "joinToken": {"type": "http", "scheme": "bearer"},
        },
        [{"jupyterToken": []}],
        servers=[{"url": "/"}],
    )


if __name__ == "__main__":  # the panel's build writes its types from this
    import json
    import sys

    with open(sys.argv[1], "w") if len(sys.argv) > 1 else sys.stdout as out:
        json.dump(openapi(), out, indent=1, sort_keys=True)
        out.write("\n")
