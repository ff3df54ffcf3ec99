"""Session containers: limits and labels, listing, deleting, idle reaping, bad input."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import BUSYBOX, new_id, output, run
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound


def test_session_container_gets_safe_limits_and_labels(agent, client, docker_client):
    sid = new_id("s")
    model = client.create_session(
        session_id=sid,
        image=BUSYBOX,
        memory="96m",
        cpus=0.5,
        pids_limit=64,
        env={"GREETING": "hello"},
        workdir="/tmp",
    )
    try:
        c = docker_client.containers.get(model["container_id"])
        host = c.attrs["HostConfig"]
        assert host["Memory"] == 96 << 20 and host["MemorySwap"] == 96 << 20
        assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 64
        assert host["NetworkMode"] == "none" and host["Privileged"] is False
        assert "no-new-privileges" in host["SecurityOpt"]
        assert c.labels["jupyter-remote.node"] == agent.node_id
        assert c.labels["jupyter-remote.session"] == sid
        events, _ = run(
            client, session_id=sid, command="echo $GREETING; pwd; ip link | grep -c '^[0-9]'"
        )
        assert output(events).split() == ["hello", "/tmp", "1"]  # only the loopback device
        assert sid in [s["session_id"] for s in client.sessions()]
    finally:
        client.delete_session(sid)
    assert agent.containers(docker_client, session=sid) == []
    with pytest.raises(NotFound):
        client.session(sid)


def test_deleting_a_session_stops_what_runs_in_it(client):
    sid = new_id("s")
    client.create_session(session_id=sid, image=BUSYBOX)

    result = {}
    t = threading.Thread(
        target=lambda: result.update(exit=run(client, session_id=sid, command="sleep 30")[1])
    )
    t.start()
    time.sleep(0.5)
    client.delete_session(sid)
    t.join(10)
    assert result["exit"]["status"] == "cancelled"


def test_idle_session_is_removed_after_its_timeout(agent, client, docker_client):
    sid = new_id("s")
    client.create_session(session_id=sid, image=BUSYBOX, idle_timeout=1)
    deadline = time.monotonic() + 10
    while agent.containers(docker_client, session=sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent.containers(docker_client, session=sid) == []
    with pytest.raises(NotFound):
        client.session(sid)


def test_sessions_survive_an_agent_restart(make_agent, docker_client):
    node = make_agent()
    node.client.create_session(session_id="keep", image=BUSYBOX)
    run(node.client, session_id="keep", command="echo x > /tmp/f")
    node.kill9()
    node.start()
    events, _ = run(node.client, session_id="keep", command="cat /tmp/f")
    assert output(events) == "x\n"


def test_bad_session_requests_change_nothing(agent, client, docker_client):
    before = len(agent.containers(docker_client))
    with pytest.raises(NotFound, match="never pull"):
        client.create_session(image="missing/image:0")
    with pytest.raises(BadRequest, match="memory"):
        client.create_session(image=BUSYBOX, memory="lots")
    with pytest.raises(BadRequest, match="network"):
        client.create_session(image=BUSYBOX, network="host")
    with pytest.raises(BadRequest, match="workdir"):
        client.create_session(image=BUSYBOX, workdir="relative/dir")
    with pytest.raises(NotFound):
        client.delete_session("never-made")
    sid = new_id("s")
    client.create_session(session_id=sid, image=BUSYBOX)
    try:
        with pytest.raises(Conflict):
            client.create_session(session_id=sid, image=BUSYBOX)
    finally:
        client.delete_session(sid)
    assert len(agent.containers(docker_client)) == before
