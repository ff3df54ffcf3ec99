"""The runner path under faults: cancel from an agent in its own PID namespace, kill -9 of
the agent mid-cell (re-attach, nothing lost, nothing twice), and the warm pool."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
import requests

from conftest import BUSYBOX, PYTHON, new_id, output, run
from jupyter_remote.agent.executions import FORGET_AFTER
from processes import UnsharedAgentProcess

# CI runs as root on Debian (util-linux is essential there): never skipped under CI.
needs_unshare = pytest.mark.skipif(
    (os.geteuid() != 0 or shutil.which("unshare") is None) and not os.environ.get("CI"),
    reason="needs root and util-linux unshare",
)


@pytest.fixture
def unshared_agent(docker_client, tmp_path_factory):
    from conftest import remove_containers

    agent = UnsharedAgentProcess(str(tmp_path_factory.mktemp("unshared"))).start()
    yield agent
    agent.stop()
    remove_containers(agent.containers(docker_client))


@needs_unshare
def test_cancel_without_the_hosts_pids(unshared_agent):
    c = unshared_agent.client
    # the agent really is in a PID namespace of its own: it is PID 1 there
    assert unshared_agent.proc.pid != 1
    c.create_session(session_id="s-ns", image=PYTHON, memory="256m")
    assert c.session("s-ns")["path"] == "runner"
    run(c, session_id="s-ns", python="x = 41")
    for body in ({"python": "while True: pass"}, {"command": "sleep 60"}):
        eid = new_id()
        stream = c.execute_stream(eid, session_id="s-ns", **body)
        assert next(stream)["event"] == "started"
        time.sleep(0.5)
        t0 = time.monotonic()
        model = c.cancel(eid, signal="SIGINT")
        assert model["status"] == "cancelled", model
        assert time.monotonic() - t0 < 5
        assert list(stream)[-1]["status"] == "cancelled"
    events, _ = run(c, session_id="s-ns", python="print(x)")
    assert output(events) == "41\n"
    # a timeout is a signal too
    events, end = run(c, session_id="s-ns", command="sleep 30", timeout=1)
    assert end["status"] == "timed_out"


LINES = "for i in $(seq 1 25); do echo line $i; sleep 0.2; done"


@pytest.mark.parametrize("kind", ["command", "python"])
def test_agent_killed_mid_cell_reattaches(make_agent, kind):
    agent = make_agent()
    c = agent.client
    c.create_session(session_id="s-keep", image=PYTHON, memory="256m")
    c.execute_stream  # noqa: B018
    code = (
        LINES
        if kind == "command"
        else "import time\nfor i in range(1, 26):\n    print('line', i)\n    time.sleep(0.2)"
    )
    eid = new_id()
    seen = []

    def watch():
        try:
            for event in c.execute_stream(eid, session_id="s-keep", **{kind: code}):
                seen.append(event)
        except Exception:  # noqa: BLE001 - the agent dies under it
            pass

    t = threading.Thread(target=watch)
    t.start()
    deadline = time.monotonic() + 10
    while len([e for e in seen if e["event"] == "stdout"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.kill9()
    t.join(10)
    time.sleep(1.0)  # the cell goes on without the agent
    agent.start()
    deadline = time.monotonic() + 30
    while c.execution(eid)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    model = c.execution(eid)
    assert model["status"] == "completed" and model["returncode"] == 0, model
    events = list(c.execution_events(eid))
    text = output(events)
    assert text == "".join(f"line {i}\n" for i in range(1, 26)), text
    assert [e["event"] for e in events].count("exit") == 1
    assert [e["event"] for e in events].count("started") == 1
    # the spool is dropped soon after the log has it all (with the runner's next cell, or
    # by itself within FORGET_AFTER); the id stays refused by the runner
    spools = os.path.join(agent.data_dir, "r")
    deadline = time.monotonic() + FORGET_AFTER + 5
    while [f for _, _, fs in os.walk(spools) for f in fs if f.endswith(".ndjson")]:
        assert time.monotonic() < deadline, "the spool was not dropped"
        time.sleep(0.1)
    # what the stream said before the kill is a prefix of the log: nothing twice
    assert events[: len(seen)] == seen
    # and the session goes on
    events, _ = run(c, session_id="s-keep", command="echo after")
    assert output(events) == "after\n"


def _pool(agent, docker_client):
    return agent.containers(docker_client, pool="1")


def _wait_pool(agent, docker_client, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        warm = [c for c in _pool(agent, docker_client) if c.status == "running"]
        if len(warm) == n and agent.client.resources()["warm_pool"].get(PYTHON) == n:
            return warm
        time.sleep(0.1)
    raise AssertionError(f"the pool did not reach {n}: {_pool(agent, docker_client)}")


def test_warm_pool_serves_fresh_executions(make_agent, docker_client):
    agent = make_agent(extra=("--warm-images", PYTHON, "--warm-pool-size", "2"))
    c = agent.client
    warm = _wait_pool(agent, docker_client, 2)
    before = {w.id for w in warm}
    sizes = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            sizes.append(c.resources()["warm_pool"].get(PYTHON, 0))
            time.sleep(0.02)

    watcher = threading.Thread(target=count)
    watcher.start()
    try:
        for i in range(4):
            t0 = time.monotonic()
            events, end = run(c, image=PYTHON, python=f"print({i})")
            took = time.monotonic() - t0
            assert output(events) == f"{i}\n" and end["status"] == "completed"
            if i < 2:  # a pooled container: no create + start in the call
                assert events[0]["container_id"] in before
                assert took < 1.0, took
            _wait_pool(agent, docker_client, 2)
            before = {w.id for w in _pool(agent, docker_client)}
        # the taken containers were removed afterwards (in the background, after the exit)
        deadline = time.monotonic() + 10
        while True:
            names = [ct.name for ct in agent.containers(docker_client, kind="fresh")]
            if len(names) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(names) == 2, names
        # other limits: a container of its own, as before
        events, end = run(c, image=PYTHON, python="print('own')", memory="300m")
        assert output(events) == "own\n"
        assert events[0]["container_id"] not in before
        # busybox is not pooled (no python3): exec path, as before
        events, end = run(c, image=BUSYBOX, command="echo bb")
        assert output(events) == "bb\n"
    finally:
        stop.set()
        watcher.join()
    assert max(sizes) <= 2, max(sizes)
    agent.stop()
    assert _pool(agent, docker_client) == []


def test_warm_pool_off(make_agent, docker_client):
    agent = make_agent(extra=("--warm-images", PYTHON, "--warm-pool-size", "0"))
    time.sleep(1)
    assert _pool(agent, docker_client) == []
    events, end = run(agent.client, image=PYTHON, python="print(1)")
    assert output(events) == "1\n"


_ = requests
