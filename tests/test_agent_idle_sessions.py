"""A session the idle reaper removed says so, instead of a bare "no such session"."""

from __future__ import annotations

import time

import pytest
import requests

from conftest import BUSYBOX, new_id, run
from jupyter_remote.protocol.errors import NotFound


def _wait_until_reaped(client, sid: str, limit: float = 15) -> None:
    deadline = time.monotonic() + limit
    while any(s["session_id"] == sid for s in client.sessions()):
        assert time.monotonic() < deadline, "the idle session was never reaped"
        time.sleep(0.2)


def test_a_reaped_session_answers_session_expired_until_made_again(make_agent, docker_client):
    node = make_agent()
    client = node.client
    sid = new_id("idle")
    client.create_session(session_id=sid, image=BUSYBOX, memory="64m", idle_timeout=1)
    run(client, session_id=sid, command="echo kept > /tmp/f")
    _wait_until_reaped(client, sid)
    assert node.containers(docker_client, session=sid) == []

    with pytest.raises(NotFound) as err:
        run(client, session_id=sid, command="cat /tmp/f")
    assert err.value.reason == "session_expired"
    assert sid in err.value.message and "idle" in err.value.message
    assert "files are gone" in err.value.message and err.value.details["idle_timeout"] == 1
    with pytest.raises(NotFound) as err:
        client.session(sid)
    assert err.value.reason == "session_expired"
    seed = requests.post(
        f"{node.url}/execute",
        json={"command": "true", "session_id": sid},
        headers={"Authorization": f"Bearer {node.token}"},
        timeout=30,
    )
    assert seed.status_code == 404 and seed.json()["reason"] == "session_expired"

    with pytest.raises(NotFound) as err:
        client.session("never-was-here")
    assert err.value.reason == "session_not_found"

    client.create_session(session_id=sid, image=BUSYBOX, memory="64m")
    events, exit_ = run(client, session_id=sid, command="test -e /tmp/f || echo fresh")
    assert exit_["returncode"] == 0 and events[1]["data"] == "fresh\n"
    client.delete_session(sid)
    with pytest.raises(NotFound) as err:  # deleted on request: not an idle removal
        client.session(sid)
    assert err.value.reason == "session_not_found"


def test_the_tombstone_survives_an_agent_restart(make_agent, tmp_path):
    node = make_agent(data_dir=str(tmp_path))
    sid = new_id("idle")
    node.client.create_session(session_id=sid, image=BUSYBOX, memory="64m", idle_timeout=0.5)
    _wait_until_reaped(node.client, sid)
    node.stop()
    node.start()
    with pytest.raises(NotFound) as err:
        node.client.session(sid)
    assert err.value.reason == "session_expired"
