"""The engine-state gateway inside the Jupyter server, and /remote/api/engine-states."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from server_fixtures import api, remote_started, until
from test_gateway import send, state

pytest_plugins = ["pytest_jupyter.jupyter_server"]
__all__ = ["remote_started"]


@pytest.fixture
def udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jp_server_config(udp_port, tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_remote_server": True}},
        "RemoteApp": {
            "local_agent_url": "",
            "db_path": str(tmp_path / "r.sqlite"),
            "gateway_port": udp_port,
            "stale_threshold_ms": 1000,
            "gateway_log_file": str(tmp_path / "states.jsonl"),
        },
    }


async def test_the_server_serves_the_latest_engine_states(jp_fetch, udp_port, tmp_path):
    now = int(time.time() * 1000)
    send(
        udp_port, [state("e1", now - 5000), state("e1", now), state("e2", now - 3000), b"not json"]
    )

    async def four():
        answer = await api(jp_fetch, "engine-states")
        return answer if answer["counters"]["received"] == 4 else None

    answer = await until(four)
    engines = {e["engine_id"]: e for e in answer["engines"]}
    assert set(engines) == {"e1", "e2"} and engines["e1"]["timestamp_ms"] == now
    assert engines["e1"]["stale"] is False and engines["e2"]["stale"] is True
    assert answer["counters"]["dropped"]["not_json"] == 1
    assert answer["stale_threshold_ms"] == 1000 and answer["enabled"] is True


OFF = {
    "ServerApp": {"jpserver_extensions": {"jupyter_remote_server": True}},
    "RemoteApp": {"local_agent_url": ""},
}


@pytest.mark.parametrize("jp_server_config", [pytest.param(OFF, id="gateway-off")])
async def test_without_a_gateway_the_endpoint_says_it_is_off(jp_fetch, jp_server_config, caplog):
    """Off is the default, and the panel polls this: a 200, never a 404 and a log WARNING."""
    for _ in range(2):
        resp = await jp_fetch("remote", "api", "engine-states")
        answer = json.loads(resp.body)
        assert resp.code == 200 and answer["enabled"] is False
        assert "gateway_port" in answer["message"] and "engines" not in answer
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
