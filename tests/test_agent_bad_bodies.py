"""Issue 10, agent side: every POST body is typed at the edge; bad ones are a 4xx, never a 5xx.

Against a real agent and a real Docker engine: each refusal names the field, and nothing is
created (no session, execution, job or container) by a refused request.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import requests

from conftest import BUSYBOX, new_id


def _post(node, path: str, data: bytes | dict) -> requests.Response:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return requests.post(
        f"{node.url}{path}",
        data=raw,
        headers={"Authorization": f"Bearer {node.token}", "Content-Type": "application/json"},
        timeout=60,
    )


def _state(node, docker_client) -> tuple:
    """What exists on the node, once it holds still: an earlier test's fresh container is
    removed in the background after its exit, and must not count as a change here."""
    c = node.client

    def read() -> tuple:
        return (
            len(c.sessions()),
            len(c.executions()),
            len(c.jobs()),
            len(node.containers(docker_client)),
        )

    deadline = time.monotonic() + 15
    last = read()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = read()
        if now == last:
            return now
        last = now
    return last


def _ex(**body) -> dict:
    return {"execution_id": new_id(), "image": BUSYBOX, **body}


def _refused(node, path: str, body, reason: str | None = None) -> dict:
    resp = _post(node, path, body)
    assert resp.status_code == 400, (path, body, resp.status_code, resp.text)
    answer = resp.json()
    assert answer["message"] and answer["reason"], answer
    if reason:
        assert answer["reason"] == reason, (path, body, answer)
    return answer


BAD_EXECUTIONS = [
    (_ex(argv=5), "bad_argv"),
    (_ex(argv=2.5), "bad_argv"),
    (_ex(argv=True), "bad_argv"),
    (_ex(argv=[1, 2]), "bad_argv"),
    (_ex(command="true", timeout=1e10), "bad_timeout"),
    (_ex(command="true", timeout="10"), "bad_timeout"),
    (_ex(command="true", timeout=0), "bad_timeout"),
    (_ex(command="true", timeout=True), "bad_timeout"),
    (_ex(command="true", cpus=1e308), "bad_cpus"),
    (_ex(command="true", pids_limit=2**31), "bad_pids_limit"),
    (_ex(command="true", memory="9999999t"), "bad_memory"),
    (_ex(command="true", env={"A": "x\x00y"}), "bad_env"),
    (_ex(command="true", workdir="/tmp/\x00"), "bad_workdir"),
    (_ex(command="true", image="../../etc"), "bad_image"),
    (_ex(command="true", image="é"), "bad_image"),
    (_ex(command="true", session_id="a\n"), "bad_session_id"),
    ({"execution_id": "abc\n", "command": "true"}, "bad_execution_id"),
    (_ex(command="true", timout=5), "bad_timout"),
]


@pytest.mark.parametrize("body,reason", BAD_EXECUTIONS, ids=[r for _, r in BAD_EXECUTIONS])
def test_bad_execution_fields_are_400_naming_the_field(agent, body, reason):
    answer = _refused(agent, "/v1/executions", body, reason)
    assert reason.removeprefix("bad_") in answer["message"]


def test_non_finite_numbers_are_400_naming_the_field_everywhere(agent, docker_client):
    before = _state(agent, docker_client)
    eid = new_id()
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        for path, raw, reason in [
            (
                "/v1/executions",
                b'{"execution_id": "%s", "command": "true", "timeout": %s}',
                "bad_timeout",
            ),
            (
                "/v1/executions",
                b'{"execution_id": "%s", "command": "true", "cpus": %s}',
                "bad_cpus",
            ),
            ("/v1/jobs", b'{"job_id": "%s", "command": "true", "timeout": %s}', "bad_timeout"),
            ("/v1/jobs", b'{"job_id": "%s", "command": "true", "cpus": %s}', "bad_cpus"),
            ("/v1/sessions", b'{"session_id": "%s", "cpus": %s}', "bad_cpus"),
            ("/v1/sessions", b'{"session_id": "%s", "idle_timeout": %s}', "bad_idle_timeout"),
        ]:
            _refused(agent, path, raw % (eid.encode(), constant), reason)
    assert _state(agent, docker_client) == before


def test_null_timeout_means_the_default_not_no_limit(agent, client):
    eid = new_id()
    events = list(client.execute_stream(eid, image=BUSYBOX, command="true", timeout=None))
    assert events[-1]["returncode"] == 0
    assert client.execution(eid)["timeout"] == 1800


def test_job_timeouts_and_cpus_out_of_range_leave_no_job(agent, docker_client):
    before = _state(agent, docker_client)
    for body, reason in [
        ({"command": "true", "timeout": 1e308}, "bad_timeout"),
        ({"command": "true", "timeout": 2**64}, "bad_timeout"),
        ({"command": "true", "cpus": 1e308}, "bad_cpus"),
        ({"tasks": [{"command": "true"}, {"argv": 5}]}, "bad_argv"),
        ({"tasks": [{"command": "true", "timeout": -1}]}, "bad_timeout"),
        ({"tasks": ["true"]}, "bad_tasks"),
        ({"tasks": []}, "bad_tasks"),
        ({"job_id": "j\n", "command": "true"}, "bad_job_id"),
        ({"command": "true", "image": "../../etc"}, "bad_image"),
    ]:
        _refused(agent, "/v1/jobs", body, reason)
    assert _state(agent, docker_client) == before


def test_bad_session_bodies_are_400_and_make_no_container(agent, docker_client):
    before = _state(agent, docker_client)
    for body, reason in [
        ({"cpus": 1000}, "bad_cpus"),
        ({"memory": "9999999t"}, "bad_memory"),
        ({"pids_limit": 2**31}, "bad_pids_limit"),
        ({"env": {"A": "\x00"}}, "bad_env"),
        ({"workdir": "/\x00"}, "bad_workdir"),
        ({"session_id": "a\n"}, "bad_session_id"),
        ({"image": "é"}, "bad_image"),
        ({"idle_timeout": "10"}, "bad_idle_timeout"),
    ]:
        _refused(agent, "/v1/sessions", {"image": BUSYBOX, **body}, reason)
    assert _state(agent, docker_client) == before


def test_cancel_and_legacy_execute_are_typed_too(agent, docker_client):
    before = _state(agent, docker_client)
    _refused(agent, f"/v1/executions/{new_id()}/cancel", {"signal": 9}, "bad_signal")
    _refused(agent, f"/v1/executions/{new_id()}/cancel", {"signal": "SIGNOPE"}, "bad_signal")
    for body, reason in [
        ({"command": 5}, "bad_command"),
        ({"command": "true", "timeout": 1e10}, "bad_timeout"),
        ({"command": "true", "image": "../../etc"}, "bad_image"),
        ({"command": "true", "cwd": "/\x00"}, "bad_cwd"),
        ({"command": "true", "session_id": "a\n"}, "bad_session_id"),
        ({"command": "true", "argv": ["x"]}, "bad_argv"),
    ]:
        _refused(agent, "/execute", body, reason)
    _refused(agent, "/execute", b'{"command": "true", "timeout": NaN}', "bad_timeout")
    assert _state(agent, docker_client) == before


@pytest.mark.parametrize(
    "path", ["/v1/executions", "/v1/sessions", "/v1/jobs", "/execute", "/v1/executions/x/cancel"]
)
def test_deep_nesting_is_400_not_recursion(agent, path):
    deep = b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert _refused(agent, path, deep, "bad_json")


def test_ids_ending_in_a_newline_are_refused_in_paths(agent):
    auth = {"Authorization": f"Bearer {agent.token}"}
    for path in (
        "/v1/executions/abc%0A",
        "/v1/jobs/abc%0A",
        "/v1/sessions/abc%0A",
        "/v1/sessions/..%2F..%2Fx",
        "/v1/executions/..%2Fx/events",
    ):
        resp = requests.get(f"{agent.url}{path}", headers=auth, timeout=30)
        assert resp.status_code == 400 and resp.json()["reason"] == "bad_id", resp.text


def _raw_request(node, header: bytes) -> bytes:
    host, port = node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_non_ascii_authorization_is_a_json_401_without_a_traceback(agent):
    log_path = os.path.join(agent.data_dir, "test-agent.log")
    start = os.path.getsize(log_path)
    for header in (
        "Authorization: Bearer t\u00f6ken".encode("latin-1"),
        "Authorization: Bearer \u20ac".encode(),
        b"Authorization: Bearer \xff\xfe",
    ):
        data = _raw_request(agent, header)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), data[:200]
        answer = json.loads(body)
        assert answer["reason"] == "bad_token" and answer["message"]
    with open(log_path, "rb") as f:
        f.seek(start)
        logged = f.read().decode(errors="replace")
    assert "Traceback" not in logged and " 500 " not in logged, logged


def test_the_openapi_document_is_served_behind_the_token(agent):
    url = f"{agent.url}/v1/openapi.json"
    assert requests.get(url, timeout=30).status_code == 401
    doc = requests.get(url, headers={"Authorization": f"Bearer {agent.token}"}, timeout=30).json()
    assert doc["openapi"].startswith("3.1")
    body = doc["paths"]["/v1/executions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ExecutionBody"}
    assert "execution_id" in doc["components"]["schemas"]["ExecutionBody"]["required"]
    stream = doc["paths"]["/v1/executions"]["post"]["responses"]["200"]["content"]
    assert "application/x-ndjson" in stream
    assert doc["components"]["schemas"]["Error"]["required"] == ["message", "reason"]
