"""schemathesis against a real agent on loopback with real Docker: no 5xx, no off-schema answer.

The document is the agent's own (GET /v1/openapi.json). Bounded to run in well under two
minutes on two cores: a few dozen examples per operation, positive and negative. Containers
it makes use network none (the agent does not allow others) and are removed afterwards.
Timeouts and long-poll waits are capped so that a generated `sleep` cannot stall the run.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from conftest import AgentProcess, remove_containers

MAX_EXAMPLES = 30
MAX_TIMEOUT = 5.0

# tar uploads (PUT .../files) are fuzzed as raw bytes
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")


@pytest.fixture(scope="module")
def fuzzed_agent(docker_client, tmp_path_factory):
    node = AgentProcess(str(tmp_path_factory.mktemp("fuzz-agent"))).start()
    yield node
    node.stop()
    remove_containers(node.containers(docker_client))


@pytest.fixture(scope="module")
def agent_schema(fuzzed_agent):
    schema = schemathesis.openapi.from_url(
        f"{fuzzed_agent.url}/v1/openapi.json",
        headers={"Authorization": f"Bearer {fuzzed_agent.token}"},
        timeout=30,
    )
    return schema


def _bounded(case) -> None:
    """Cap what would only make the run slow: the command's timeout and a long-poll's wait."""
    body = case.body
    if isinstance(body, dict) and ({"command", "python", "argv"} & body.keys()):
        timeout = body.get("timeout")
        if timeout is None or (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 5
        ):
            body["timeout"] = MAX_TIMEOUT
    if isinstance(case.query, dict) and "wait" in case.query:
        case.query["wait"] = 0


def test_agent_api_has_no_server_errors_and_keeps_its_schema(
    agent_schema, fuzzed_agent, docker_client
):
    """Every operation, positive and negative examples; all failures reported at the end."""
    headers = {"Authorization": f"Bearer {fuzzed_agent.token}"}
    failures: list[str] = []
    statuses: dict[str, dict[int, int]] = {}
    for result in agent_schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _exercise(result.ok(), mode, fuzzed_agent.url, headers, failures, statuses)
    calls = {label: sum(by.values()) for label, by in statuses.items()}
    print(
        f"\nschemathesis: {len(calls)} operations, {sum(calls.values())} calls, "
        f"{len(failures)} failures"
    )
    for label, by in sorted(statuses.items()):
        print(f"  {label}: {dict(sorted(by.items()))}")
    assert len(calls) == 23  # every operation of the document, /v1/whoami included
    assert not failures, "\n\n".join(failures[:10])
    with open(os.path.join(fuzzed_agent.data_dir, "test-agent.log"), errors="replace") as f:
        logged = f.read()
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-5000:]
    made = fuzzed_agent.containers(docker_client)
    assert all(c.attrs["HostConfig"]["NetworkMode"] == "none" for c in made)


def _exercise(operation, mode, url, headers, failures, statuses) -> None:
    """One operation in one mode: the status of each answer counted, each failure kept."""

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case) -> None:
        _bounded(case)
        try:
            response = case.call(base_url=url, headers=headers, timeout=60)
            by = statuses.setdefault(operation.label, {})
            by[response.status_code] = by.get(response.status_code, 0) + 1
            case.validate_response(
                response,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )
        except Exception as exc:  # noqa: BLE001 - collected, reported all at once
            failures.append(f"{operation.label} [{mode}]: {str(exc)[:2000]}")

    exercise()
