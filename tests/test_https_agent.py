"""An agent reached over https, as real remote hosts are: the same fast path as plain HTTP.

A self-signed CA (trustme) signs the agent's certificate; the server trusts it through
REQUESTS_CA_BUNDLE, as a user would configure it. Without that CA the node is refused with
a clear reason, and no cell is sent.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
import trustme

from processes import BUSYBOX, AgentProcess
from server_process import ServerProcess

pytestmark = pytest.mark.docker


@pytest.fixture
def ca(tmp_path, monkeypatch):
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    return authority


@pytest.fixture
def https_agent(docker_client, tmp_path, ca):
    data = tmp_path / "agent"
    data.mkdir()
    agent = AgentProcess(str(data), ca=ca).start()
    yield agent
    agent.stop()


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_agent_serves_https_and_refuses_plain_http(https_agent):
    auth = {"Authorization": f"Bearer {https_agent.token}"}
    assert requests.get(https_agent.url + "/v1/health", headers=auth, timeout=10).ok
    plain = https_agent.url.replace("https://", "http://")
    with pytest.raises(requests.ConnectionError):
        requests.get(plain + "/v1/health", headers=auth, timeout=10)


def _server_dir(tmp_path):
    path = tmp_path / "server"
    path.mkdir()
    return path


def test_a_cell_runs_through_the_server_on_an_https_agent(https_agent, tmp_path):
    server = ServerProcess(_server_dir(tmp_path), [https_agent]).start()
    try:
        (node,) = server.get("nodes")["nodes"]
        assert node["url"].startswith("https://") and node["state"] in ("healthy", "busy")
        resp = requests.post(
            f"{server.url}/executions",
            json={
                "execution_id": f"tls-{uuid.uuid4().hex[:8]}",
                "command": "echo over-tls",
                "image": BUSYBOX,
            },
            headers={"Authorization": f"token {server.token}"},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        events = _events(resp.text)
        out = "".join(e.get("data", "") for e in events if e["event"] == "stdout")
        assert out == "over-tls\n"
        assert events[-1]["event"] == "exit" and events[-1]["returncode"] == 0
    finally:
        server.stop()


def test_an_agent_whose_certificate_is_not_trusted_is_never_healthy(
    https_agent, tmp_path, monkeypatch
):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    server = ServerProcess(_server_dir(tmp_path), [https_agent])
    server.expect_nodes = 0
    server.start()
    try:
        server.wait_for(lambda: server.get("nodes")["nodes"][0]["state"] == "suspect", 15)
        node = server.get("nodes")["nodes"][0]
        assert "certificate" in (node["reason"] or "").lower(), node
        refused = requests.post(
            f"{server.url}/executions",
            json={"execution_id": "tls-untrusted", "command": "true", "image": BUSYBOX},
            headers={"Authorization": f"token {server.token}"},
            timeout=60,
        )
        assert refused.status_code in (502, 503), refused.text
        assert refused.json()["message"]
    finally:
        server.stop()
