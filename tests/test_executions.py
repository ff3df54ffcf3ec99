"""Executions on a real Docker engine: streaming, run-once ids, timeouts, cancel, OOM."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests

from conftest import BUSYBOX, PYTHON, new_id, output, run
from jupyter_remote.agent.identity import hostname
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound


def test_events_stream_started_output_and_exit(client, session):
    events, exit_ = run(client, session_id=session, command="echo out; echo err >&2; exit 3")
    assert events[0]["event"] == "started"
    assert events[0]["session_id"] == session and events[0]["node_id"]
    assert output(events) == "out\n" and output(events, "stderr") == "err\n"
    assert exit_["event"] == "exit" and exit_["returncode"] == 3
    assert exit_["status"] == "failed" and exit_["duration"] > 0


def test_output_arrives_live_before_the_command_ends(client, session):
    t0 = time.monotonic()
    seen = []
    for event in client.execute_stream(
        new_id(), session_id=session, command="echo first; sleep 2; echo second"
    ):
        seen.append((event["event"], event.get("data"), time.monotonic() - t0))
    first = next(t for kind, data, t in seen if data == "first\n")
    end = seen[-1][2]
    assert first < 1.0 and end >= 2.0, seen


def test_session_keeps_files_between_commands(client, session):
    run(client, session_id=session, command="echo kept > /tmp/state")
    events, exit_ = run(client, session_id=session, command="cat /tmp/state")
    assert output(events) == "kept\n" and exit_["returncode"] == 0


def test_same_execution_id_never_runs_twice(client, session):
    eid = new_id()
    _, first = run(client, execution_id=eid, session_id=session, command="echo line >> /tmp/once")
    with pytest.raises(Conflict) as err:
        run(client, execution_id=eid, session_id=session, command="echo line >> /tmp/once")
    assert err.value.details["execution"]["status"] == first["status"] == "completed"
    assert "never run twice" in err.value.message
    events, _ = run(client, session_id=session, command="wc -l < /tmp/once")
    assert output(events).strip() == "1"


def test_client_dropping_the_stream_does_not_rerun_and_output_is_logged(agent, client, session):
    eid = new_id()
    body = {
        "execution_id": eid,
        "session_id": session,
        "command": "for i in 1 2 3 4 5; do echo $i >> /tmp/ran; echo line$i; sleep 0.2; done",
    }
    resp = requests.post(
        f"{agent.url}/v1/executions",
        json=body,
        stream=True,
        headers={"Authorization": f"Bearer {agent.token}"},
    )
    lines = resp.iter_lines()
    assert b'"started"' in next(lines)
    resp.close()  # the client goes away mid-stream
    deadline = time.monotonic() + 10
    while client.execution(eid)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.execution(eid)["status"] == "completed"
    logged = list(client.execution_events(eid))
    assert output(logged) == "".join(f"line{i}\n" for i in range(1, 6))
    assert logged[-1]["event"] == "exit"
    events, _ = run(client, session_id=session, command="wc -l < /tmp/ran")
    assert output(events).strip() == "5"


def test_events_can_be_read_again_from_an_offset_and_followed(client, session):
    eid = new_id()
    done = threading.Event()

    def start():
        run(client, execution_id=eid, session_id=session, command="echo a; sleep 1; echo b")
        done.set()

    threading.Thread(target=start).start()
    time.sleep(0.5)
    followed = list(client.execution_events(eid, follow=True))
    assert output(followed) == "a\nb\n" and followed[-1]["event"] == "exit"
    done.wait(5)
    full = client.execution(eid)["log_size"]
    first_line = len(b"".join(_raw(client, eid)).split(b"\n", 1)[0]) + 1
    rest = list(client.execution_events(eid, offset=first_line))
    assert rest[0]["event"] != "started" and rest[-1]["event"] == "exit" and full > first_line


def _raw(client, eid):
    resp = client.http.get(f"{client.url}/v1/executions/{eid}/events")
    yield resp.content


def test_timeout_kills_the_command_and_says_so(client, session):
    t0 = time.monotonic()
    _, exit_ = run(client, session_id=session, command="sleep 30", timeout=1)
    assert time.monotonic() - t0 < 3
    assert exit_["timed_out"] is True and exit_["status"] == "timed_out"
    assert exit_["returncode"] != 0 and "timed out" in exit_["message"]


def test_cancel_kills_a_running_command(client, session):
    eid = new_id()
    result = {}
    t = threading.Thread(
        target=lambda: result.update(
            exit=run(client, execution_id=eid, session_id=session, command="sleep 30")[1]
        )
    )
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    model = client.cancel(eid)
    t.join(10)
    assert time.monotonic() - t0 < 3
    assert model["status"] == "cancelled" and result["exit"]["cancelled"] is True
    with pytest.raises(Conflict):
        client.cancel(eid)


def test_memory_hog_is_reported_as_oom_killed(client):
    sid = new_id("oom")
    client.create_session(session_id=sid, image=PYTHON, memory="64m")
    try:
        _, exit_ = run(
            client, session_id=sid, python="x = bytearray(400 * 1024 * 1024)\nprint('survived')"
        )
    finally:
        client.delete_session(sid)
    assert exit_["oom_killed"] is True and exit_["status"] == "failed"
    assert exit_["returncode"] == 137 and "out of memory" in exit_["message"]


def test_python_source_runs_with_the_images_python(client):
    events, exit_ = run(client, image=PYTHON, python="import sys\nprint(sys.version_info[0] * 14)")
    assert output(events) == "42\n" and exit_["returncode"] == 0


def test_fresh_container_is_removed_afterwards(agent, client, docker_client):
    eid = new_id()
    events, exit_ = run(client, execution_id=eid, image=BUSYBOX, command="hostname")
    assert exit_["returncode"] == 0
    assert output(events).strip() == hostname(agent.node_id)  # the node's name, not an id
    # removed right after the exit event, in the background (the client does not wait)
    deadline = time.monotonic() + 10
    while agent.containers(docker_client, execution=eid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent.containers(docker_client, execution=eid) == []


def test_multibyte_characters_split_across_writes_arrive_whole(client, session):
    events, _ = run(
        client, session_id=session, command=r"printf '\342\202'; sleep 0.2; printf '\254\n'"
    )
    assert output(events) == "\u20ac\n"


def test_bad_requests_get_4xx_json_and_change_nothing(agent, client, session, docker_client):
    before = (len(client.executions()), len(agent.containers(docker_client)))
    with pytest.raises(NotFound, match="never pull"):
        run(client, image="no-such/image:1", command="true")
    with pytest.raises(NotFound, match="no session"):
        run(client, session_id="no-such-session", command="true")
    with pytest.raises(BadRequest, match="timeout"):
        run(client, session_id=session, command="true", timeout=-1)
    with pytest.raises(BadRequest, match="exactly one of"):
        run(client, session_id=session)
    with pytest.raises(BadRequest, match="execution_id"):
        run(client, execution_id="bad id/../x", session_id=session, command="true")
    auth = {"Authorization": f"Bearer {agent.token}"}
    bad_json = requests.post(f"{agent.url}/v1/executions", data=b"{nope", headers=auth)
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["message"]
    wrong = requests.post(
        f"{agent.url}/v1/executions", json={}, headers={"Authorization": "Bearer wrong"}
    )
    assert wrong.status_code == 401 and wrong.json()["reason"] == "bad_token"
    big = requests.post(f"{agent.url}/v1/executions", data=b"x" * (33 << 20), headers=auth)
    assert big.status_code == 413 and "limit" in big.json()["message"]
    assert big.json()["reason"] == "payload_too_large"
    assert (len(client.executions()), len(agent.containers(docker_client))) == before


def test_a_follower_that_leaves_a_silent_command_is_let_go_at_once(agent, client, session):
    eid = new_id()
    threading.Thread(
        target=run,
        args=(client,),
        kwargs={"execution_id": eid, "session_id": session, "command": "sleep 3"},
        daemon=True,
    ).start()
    time.sleep(0.3)
    resp = requests.get(
        f"{agent.url}/v1/executions/{eid}/events?follow=1",
        stream=True,
        headers={"Authorization": f"Bearer {agent.token}"},
    )
    assert b'"started"' in next(resp.iter_lines())
    resp.close()
    log_path = os.path.join(agent.data_dir, "test-agent.log")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        with open(log_path) as fh:
            if f"client left GET /v1/executions/{eid}/events" in fh.read():
                break
        time.sleep(0.05)
    else:
        raise AssertionError("the follower's coroutine still waits for output")
    assert client.execution(eid)["status"] == "running"
