"""Limits the host cannot give are refused up front, in our words, never Docker's raw 400."""

from __future__ import annotations

import subprocess
import sys

import requests

from conftest import BUSYBOX, free_port, new_id


def _post(node, path: str, body: dict) -> requests.Response:
    return requests.post(
        f"{node.url}{path}",
        json=body,
        headers={"Authorization": f"Bearer {node.token}"},
        timeout=60,
    )


def _state(node, docker_client) -> tuple:
    client = node.client
    return (
        len(client.sessions()),
        len(client.executions()),
        len(client.jobs()),
        len(node.containers(docker_client)),
    )


def test_more_cpus_or_memory_than_the_host_has_is_a_clear_400(agent, docker_client):
    engine = docker_client.info()
    ncpu, total = engine["NCPU"], engine["MemTotal"]
    before = _state(agent, docker_client)
    too_many = {"image": BUSYBOX, "cpus": ncpu + 6}
    too_much = {"image": BUSYBOX, "memory": total * 2}
    requests_ = [
        ("/v1/executions", {"execution_id": new_id(), "command": "true", **too_many}),
        ("/v1/sessions", too_many),
        ("/v1/jobs", {"command": "true", **too_many}),
        ("/v1/jobs", {"tasks": [{"command": "true"}, {"command": "true", "cpus": ncpu + 6}]}),
    ]
    for path, body in requests_:
        resp = _post(agent, path, body)
        assert resp.status_code == 400, (path, resp.text)
        answer = resp.json()
        assert answer["reason"] == "bad_cpus" and f"this node's {ncpu} CPUs" in answer["message"]
        assert "Range of CPUs" not in answer["message"]  # Docker's own words
    for path, body in [
        ("/v1/executions", {"execution_id": new_id(), "command": "true", **too_much}),
        ("/v1/sessions", too_much),
        ("/v1/jobs", {"command": "true", **too_much}),
    ]:
        resp = _post(agent, path, body)
        assert resp.status_code == 400 and resp.json()["reason"] == "bad_memory", resp.text
        assert "of memory in total" in resp.json()["message"]
    assert _state(agent, docker_client) == before


def test_bad_sizes_and_numbers_are_400_too(agent, docker_client):
    before = _state(agent, docker_client)
    for body, reason in [
        ({"memory": "lots"}, "bad_memory"),
        ({"memory": True}, "bad_memory"),
        ({"memory": "1m"}, "bad_memory"),
        ({"cpus": "two"}, "bad_cpus"),
        ({"cpus": 0}, "bad_cpus"),
        ({"pids_limit": 2.5}, "bad_pids_limit"),
    ]:
        resp = _post(agent, "/v1/sessions", {"image": BUSYBOX, **body})
        assert resp.status_code == 400 and resp.json()["reason"] == reason, (body, resp.text)
    for raw, reason in [
        (b'{"image": "%s", "cpus": NaN}', "bad_cpus"),
        (b'{"image": "%s", "idle_timeout": Infinity}', "bad_idle_timeout"),
    ]:
        resp = requests.post(
            f"{agent.url}/v1/sessions",
            data=raw % BUSYBOX.encode(),
            headers={"Authorization": f"Bearer {agent.token}"},
            timeout=30,
        )
        assert resp.status_code == 400 and resp.json()["reason"] == reason, resp.text
    resp = requests.post(
        f"{agent.url}/v1/executions",
        data=b'{"execution_id": "%s", "command": "true", "timeout": Infinity}' % new_id().encode(),
        headers={"Authorization": f"Bearer {agent.token}"},
        timeout=30,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["reason"] == "bad_timeout"
    assert _state(agent, docker_client) == before


def test_an_agent_whose_default_cpus_the_host_lacks_refuses_to_start(docker_client, tmp_path):
    ncpu = docker_client.info()["NCPU"]
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_remote", "agent", "--cpus", str(ncpu + 6)]
        + ["--data-dir", str(tmp_path), "--listen", listen],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"this node's {ncpu} CPUs" in result.stderr and "Traceback" not in result.stderr
