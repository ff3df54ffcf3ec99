"""The agent with the runner (issue 11): session containers of python images run the runner
as their main process; cells go over its socket. Real Docker, real agent processes."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from conftest import BUSYBOX, PYTHON, new_id, output, run


@pytest.fixture
def py_session(client):
    sid = f"s-{uuid.uuid4().hex[:8]}"
    model = client.create_session(session_id=sid, image=PYTHON, memory="256m")
    yield sid, model
    try:
        client.delete_session(sid)
    except Exception:  # noqa: BLE001 - a test may have deleted it already
        pass


def py(client, sid, code, **kw):
    return run(client, session_id=sid, python=code, **kw)


def sh(client, sid, code, **kw):
    return run(client, session_id=sid, command=code, **kw)


def displays(events):
    return [e for e in events if e["event"] == "display"]


def test_python_session_keeps_state_and_shows_rich_output(client, py_session):
    sid, model = py_session
    assert model["path"] == "runner"
    assert client.session(sid)["path"] == "runner"
    events, end = py(client, sid, "x = 41")
    assert end["status"] == "completed", events
    assert events[0]["event"] == "started"
    events, end = py(client, sid, "print(x + 1)")
    assert output(events) == "42\n" and end["returncode"] == 0
    assert [e["event"] for e in events].count("exit") == 1

    events, end = py(client, sid, "x * 2")
    (shown,) = displays(events)
    assert shown["data"]["text/plain"] == "82" and shown["metadata"] == {}

    code = "class H:\n    def _repr_html_(self):\n        return '<b>hi</b>'\nH()"
    events, _ = py(client, sid, code)
    assert displays(events)[0]["data"]["text/html"] == "<b>hi</b>"
    events, _ = py(client, sid, "display(1, 2)")
    assert [d["data"]["text/plain"] for d in displays(events)] == ["1", "2"]

    events, end = py(client, sid, "1/0")
    assert end["status"] == "failed" and end["returncode"] == 1
    assert "ZeroDivisionError" in output(events, "stderr")

    # the execution's model says which path it took
    assert client.execution(events[0]["execution_id"])["path"] == "runner"


def test_python_interrupt_keeps_state(client, py_session):
    sid, _ = py_session
    py(client, sid, "x = 41")
    eid = new_id()
    stream = client.execute_stream(eid, session_id=sid, python="while True: pass")
    first = next(stream)
    assert first["event"] == "started"
    time.sleep(0.5)
    t0 = time.monotonic()
    model = client.cancel(eid, signal="SIGINT")
    assert time.monotonic() - t0 < 3
    assert model["status"] == "cancelled", model
    rest = list(stream)
    assert rest[-1]["event"] == "exit" and rest[-1]["status"] == "cancelled"
    assert "KeyboardInterrupt" in output(rest, "stderr")
    events, end = py(client, sid, "print(x)")
    assert output(events) == "41\n", events


def test_python_crash_then_notice(client, py_session):
    sid, _ = py_session
    py(client, sid, "x = 1")
    events, end = py(client, sid, "import os; os._exit(1)")
    assert end["status"] == "failed" and end["returncode"] == 1
    events, end = py(client, sid, "print('alive')")
    assert output(events) == "alive\n" and end["status"] == "completed"
    notices = [e for e in events if e["event"] == "notice"]
    assert notices and "state was lost" in notices[0]["message"], events


def test_shell_state_carries_over(client, py_session):
    sid, _ = py_session
    events, end = sh(client, sid, "cd /tmp; export A=1")
    assert end["status"] == "completed", events
    events, end = sh(client, sid, "pwd; echo $A")
    assert output(events) == "/tmp\n1\n", events
    events, end = sh(client, sid, "echo oops >&2; exit 3")
    assert end["returncode"] == 3 and end["status"] == "failed"
    assert output(events, "stderr") == "oops\n"
    # argv bodies keep using docker exec
    events, end = run(client, session_id=sid, argv=["sh", "-c", "echo argv"])
    assert output(events) == "argv\n" and end["status"] == "completed"
    assert client.execution(events[0]["execution_id"])["path"] == "exec"


def test_shell_cancel_and_timeout(client, py_session):
    sid, _ = py_session
    events, end = sh(client, sid, "echo before; sleep 30", timeout=1)
    assert end["status"] == "timed_out", end
    assert output(events) == "before\n"
    eid = new_id()
    cell = "trap 'echo bye; exit 7' TERM; sleep 30 & wait"
    stream = client.execute_stream(eid, session_id=sid, command=cell)
    next(stream)
    time.sleep(0.5)
    model = client.cancel(eid)
    assert model["status"] == "cancelled" and model["returncode"] == 7, model
    assert output(list(stream)) == "bye\n"


def test_five_megabyte_cells(client, py_session):
    sid, _ = py_session
    line = "x" * 99 + "\n"
    big = "cat <<'EOF' | wc -c\n" + line * 50_000 + "EOF\n"
    assert len(big) > 5_000_000
    events, end = sh(client, sid, big)
    assert end["status"] == "completed", end
    assert output(events).strip() == "5000000"
    code = "s = " + repr(line * 50_000) + "\nprint(len(s))"
    events, end = py(client, sid, code)
    assert output(events) == "5000000\n", end
    # and 5 MB of output back
    events, end = py(client, sid, "import sys; sys.stdout.write('y' * 5_000_000)")
    assert len(output(events)) == 5_000_000 and end["status"] == "completed"


def test_busybox_session_keeps_the_exec_path(client, session):
    assert client.session(session)["path"] == "exec"
    events, end = run(client, session_id=session, command="cd /tmp; echo hi")
    assert output(events) == "hi\n" and end["status"] == "completed"
    assert client.execution(events[0]["execution_id"])["path"] == "exec"


def test_concurrent_cells_in_one_runner_session(client, py_session):
    sid, _ = py_session
    results = {}

    def go(i):
        results[i] = sh(client, sid, f"sleep 0.3; echo {i}")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {output(results[i][0]) for i in range(4)} == {f"{i}\n" for i in range(4)}


def test_runner_session_model_and_container(client, py_session, docker_client):
    sid, model = py_session
    c = docker_client.containers.get(model["container_id"])
    host = c.attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert "no-new-privileges" in host["SecurityOpt"]
    assert c.labels["jupyter-remote.path"] == "runner"
    assert c.attrs["Config"]["Cmd"][:2] == ["python3", "/opt/jupyter-remote/runner"]
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/opt/jupyter-remote/runner"]["RW"] is False
    assert mounts["/run/jupyter-remote"]["RW"] is True


def test_python_session_with_no_runner_agent(make_agent):
    agent = make_agent(extra=("--no-runner",))
    c = agent.client
    c.create_session(session_id="s-plain", image=PYTHON, memory="128m")
    assert c.session("s-plain")["path"] == "exec"
    events, end = run(c, session_id="s-plain", python="print(1)")
    assert output(events) == "1\n"
    c.delete_session("s-plain")


_ = BUSYBOX


def test_output_streams_as_records_to_those_who_ask_and_as_ndjson_to_others(
    agent, client, py_session
):
    """Output crosses runner, log and HTTP as sized records (protocol/records.py): a client
    sending Accept: RECORDS_TYPE gets them as they are; any other gets NDJSON lines with
    the same events; an offset inside an event is a 400, not a garbled stream."""
    import json

    import requests

    from jupyter_remote.protocol import records

    sid, _ = py_session
    eid = new_id()
    code = 'printf \'a"b\\\\c\\n\\001\\n\'; printf "\\303\\251\\n" >&2'
    events, end = sh(client, sid, code, execution_id=eid)
    assert end["status"] == "completed"
    assert output(events) == 'a"b\\c\n\x01\n' and output(events, "stderr") == "é\n"

    url = f"{agent.url}/v1/executions/{eid}/events"
    auth = {"Authorization": f"Bearer {agent.token}"}
    raw = requests.get(url, headers={**auth, "Accept": records.RECORDS_TYPE}, timeout=10)
    assert raw.headers["Content-Type"].startswith(records.RECORDS_TYPE)
    assert b'{"event":"stdout","size":' in raw.content  # not escaped: as the command wrote it
    plain = requests.get(url, headers=auth, timeout=10)
    assert plain.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in plain.content.splitlines()]
    assert lines == list(records.events(raw.content)) == events

    inside = raw.content.index(b'"size":') + 3
    bad = requests.get(url, params={"offset": inside}, headers=auth, timeout=10)
    assert bad.status_code == 400 and bad.json()["reason"] == "bad_offset"
    first = raw.content.index(b"\n") + 1  # after the started event: the rest of them
    rest = requests.get(url, params={"offset": first}, headers=auth, timeout=10)
    assert [json.loads(line) for line in rest.content.splitlines()] == events[1:]
