"""schemathesis against the server API's own OpenAPI document: a real `jupyter server`
process with the extension and a real agent; no 5xx, no answer outside the document."""

from __future__ import annotations

import json
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conftest import BUSYBOX
from processes import AgentProcess
from server_process import ServerProcess

# Removing the node or stopping the fixture's work would tear the fixture down mid-run.
EXAMPLES = 40
# A well-formed request may still be refused for what it names (an agent that does not
# answer, an image no node has): a 400 then is right, so "schema-valid means accepted"
# does not hold for this API.
STATEFUL = positive_data_acceptance
SKIP = {("DELETE", "/remote/api/nodes/{node_id}")}

# tar uploads (PUT .../files) are fuzzed as raw bytes
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")


@pytest.fixture(scope="module")
def server(docker_client, tmp_path_factory):
    agent = AgentProcess(str(tmp_path_factory.mktemp("agent")), host="127.0.0.2").start()
    root = tmp_path_factory.mktemp("server")
    process = ServerProcess(root, [agent], default_image=BUSYBOX, join_token="fuzz-join").start()
    yield process
    process.stop()
    agent.stop()
    for container in agent.containers(docker_client):
        container.remove(force=True)


@pytest.fixture(scope="module")
def server_schema(server):
    resp = requests.get(
        f"{server.url}/openapi.json",
        headers={"Authorization": f"token {server.token}"},
        timeout=30,
    )
    resp.raise_for_status()
    schema = schemathesis.openapi.from_dict(resp.json())
    schema.config.base_url = f"http://127.0.0.1:{server.port}"
    return schema


def test_the_document_is_behind_jupyter_auth(server):
    resp = requests.get(f"{server.url}/openapi.json", timeout=30)
    assert resp.status_code == 403 and resp.json()["message"]


def test_no_server_errors_and_every_answer_fits_the_document(server, server_schema):
    """Each operation in turn, a few examples each (bounded: < 2 minutes on 2 cores)."""
    failures, calls = [], {"total": 0}
    for result in server_schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        def check(case):
            calls["total"] += 1
            try:
                case.call_and_validate(
                    headers=headers_for(server, case), timeout=60, excluded_checks=[STATEFUL]
                )
            except (AssertionError, FailureGroup) as exc:
                failures.append(f"{case.method} {case.formatted_path}: {exc}"[:2000])

        check()
    print(f"schemathesis: {calls['total']} calls, {len(failures)} failures")
    assert not failures, "\n\n".join(failures[:10])


def headers_for(server, case) -> dict:
    if case.query and "follow" in case.query:
        case.query["follow"] = "0"  # a followed log of a running task never ends by itself
    if case.path.endswith("/nodes/join"):
        return {"Authorization": "Bearer fuzz-join"}
    return {"Authorization": f"token {server.token}"}


def test_every_route_is_in_the_document():
    from jupyter_remote.protocol.server_openapi import openapi
    from jupyter_remote_server.routes import handlers

    routes = {
        (pattern.replace("([^/]+)", "{}"), verb)
        for pattern, handler in handlers()
        for verb in ("get", "post", "put", "delete")
        if verb in vars(handler)
    }
    documented = {
        (re.sub(r"\{[^}]+\}", "{}", path), verb)
        for path, methods in openapi()["paths"].items()
        for verb in methods
    }
    assert routes == documented
    for path, methods in openapi()["paths"].items():
        for method, op in methods.items():
            assert "403" in op["responses"], (method, path)
            assert all(r["content"] for r in op["responses"].values()), (method, path)


def test_real_answers_fit_the_response_models(server):
    """A job that ran, its nodes and the engine states parse as the document says."""
    from jupyter_remote.protocol.server_answers import EngineStates, Job, Node

    job = server.post("jobs", body={"image": BUSYBOX, "tasks": [{"command": "true"}] * 2})
    Job.model_validate(job)
    done = server.get("jobs", job["job_id"], "wait", timeout="30")
    assert Job.model_validate(done).status == "completed"
    for job in server.get("jobs")["jobs"]:
        Job.model_validate(job)
    for node in server.get("nodes")["nodes"]:
        Node.model_validate(node)
    EngineStates.model_validate(server.get("engine-states"))


def test_the_panel_builds_its_types_from_the_current_document():
    """The panel's build runs openapi-typescript on this file: it must match the models."""
    from pathlib import Path

    from jupyter_remote.protocol.server_openapi import openapi

    saved = Path(__file__).parent.parent / "server_ext" / "labextension" / "openapi.json"
    assert json.loads(saved.read_text()) == json.loads(json.dumps(openapi())), (
        "run `jlpm build:openapi` in server_ext/labextension"
    )
