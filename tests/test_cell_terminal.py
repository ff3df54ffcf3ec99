"""Cells look like a terminal and like IPython (issue 18): shell cells run with bash where
the image has it, their errors name the cell's line and no file of ours; Python tracebacks
name cells "Cell In[N]" (the kernel's execution_count, passed on by the server) without the
runner's frames; a container is named after its node and session and starts in a working
directory that is never /. Real Docker, real agents, a real Jupyter server."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import requests

from conftest import BUSYBOX, PYTHON, new_id, output, remove_containers, run
from jupyter_remote.agent.identity import hostname
from jupyter_remote.protocol.errors import RemoteError
from processes import RUN_ID

FEATURES = "echo {1..3}\n[[ -n x ]] && echo double-brackets\necho $0"


@pytest.fixture(scope="module")
def exec_agent(docker_client, tmp_path_factory):
    """An agent that runs every cell as a docker exec (no runner), so the python image
    shows the exec path's bash."""
    from processes import AgentProcess

    agent = AgentProcess(
        str(tmp_path_factory.mktemp("exec-agent")), extra=("--no-runner", "--warm-pool-size", "0")
    ).start()
    yield agent
    agent.stop()
    remove_containers(agent.containers(docker_client))


@pytest.fixture
def sessions(client, exec_agent):
    """(client, session id, path) for a python session on the runner path, one on the exec
    path, and a busybox one (sh: no bash in it); deleted afterwards."""
    made = []
    for owner, image in ((client, PYTHON), (exec_agent.client, PYTHON), (client, BUSYBOX)):
        sid = new_id("term")
        model = owner.create_session(session_id=sid, image=image, memory="256m")
        made.append((owner, sid, model))
    yield made
    for owner, sid, _ in made:
        owner.delete_session(sid)


def test_shell_cells_run_with_bash_where_the_image_has_it(sessions):
    runner, exec_path, busybox = sessions
    for owner, sid, model in (runner, exec_path):
        events, end = run(owner, session_id=sid, command=FEATURES)
        assert output(events) == "1 2 3\ndouble-brackets\nbash\n", (model["path"], events)
        assert end["returncode"] == 0
    owner, sid, _ = busybox
    events, _ = run(owner, session_id=sid, command=FEATURES)
    assert output(events).splitlines()[0] == "{1..3}"  # sh: no brace expansion
    assert output(events).splitlines()[-1] == "sh"


def test_a_shell_error_names_the_cells_line_and_no_file_of_ours(sessions):
    runner, exec_path, busybox = sessions
    for owner, sid, model in (runner, exec_path):
        events, end = run(owner, session_id=sid, command="echo a\nfoo\necho b")
        assert output(events, "stderr") == "bash: line 2: foo: command not found\n", model
        assert output(events) == "a\nb\n" and end["returncode"] == 0
        events, end = run(owner, session_id=sid, command="echo a\nif then\n")
        err = output(events, "stderr")
        assert "line 2: syntax error near unexpected token `then'" in err, err
        assert "/run/jupyter-remote" not in err and ".sh" not in err and end["returncode"] == 2
    owner, sid, _ = busybox
    events, end = run(owner, session_id=sid, command="echo a\nfoo")
    err = output(events, "stderr")
    assert "foo: not found" in err and "/run/jupyter-remote" not in err, err
    assert end["returncode"] == 127


def test_python_tracebacks_name_cells_as_ipython_does(sessions):
    owner, sid, _ = sessions[0]
    run(owner, session_id=sid, python="def f(x):\n    return 1 / x\n", execution_count=3)
    events, end = run(owner, session_id=sid, python="y = 1\nf(0)", execution_count=4)
    trace = output(events, "stderr")
    assert end["returncode"] == 1
    assert trace.startswith("Traceback (most recent call last):\n  Cell In[4], line 2, in <module>")
    assert "  Cell In[3], line 2, in f\n    return 1 / x\n" in trace
    assert trace.endswith("ZeroDivisionError: division by zero\n")
    assert "<cell " not in trace and "pyworker" not in trace and "File " not in trace

    events, _ = run(owner, session_id=sid, python="x = (\n", execution_count=5)
    trace = output(events, "stderr")
    assert trace.startswith("  Cell In[5], line 1\n"), trace  # no parser frames, as IPython
    assert "SyntaxError" in trace and "Traceback" not in trace

    events, _ = run(owner, session_id=sid, python="raise KeyError('k')")
    assert "  Cell In[?], line 1, in <module>\n" in output(events, "stderr")

    events, _ = run(
        owner, session_id=sid, python="import warnings\nwarnings.warn('careful')", execution_count=7
    )
    assert output(events, "stderr").startswith("Cell In[7]:2: UserWarning: careful\n")

    # the runner's own frames go from chained exceptions too (display() raised in the cell)
    events, _ = run(owner, session_id=sid, python="display(1 / 0)", execution_count=6)
    assert "pyworker" not in output(events, "stderr")


@pytest.mark.parametrize("bad", ["3", -1, 2**31, True, 1.5])
def test_a_bad_execution_count_is_refused(client, bad):
    with pytest.raises(RemoteError) as refused:
        client.open_execution(new_id(), image=BUSYBOX, command="true", execution_count=bad)
    assert refused.value.status == 400 and "execution_count" in refused.value.message


def test_containers_are_named_after_their_node_and_session(client, agent, sessions):
    for owner, sid, model in sessions:
        node_id = owner.info()["node_id"]
        events, _ = run(owner, session_id=sid, command="cat /proc/sys/kernel/hostname")
        assert output(events) == hostname(node_id, sid) + "\n", model
        assert output(events).startswith(node_id.lower())
    events, _ = run(client, image=PYTHON, command="cat /proc/sys/kernel/hostname")
    assert output(events) == hostname(agent.node_id) + "\n"  # a fresh container: the node's


def test_a_kernels_session_name_is_its_kernel_ids_start():
    kernel = str(uuid.uuid4())
    name = hostname("Node_7.example", f"k-{kernel}-0123abcd")
    assert name == f"node-7-example-{kernel[:8]}"
    assert len(hostname("n" * 100, "s-" + "a" * 40)) == 63


def test_cells_start_in_the_home_directory_not_root(sessions, client):
    for owner, sid, model in sessions:
        assert model["workdir"] == "/root", model
        events, _ = run(owner, session_id=sid, command="pwd")
        assert output(events) == "/root\n", model
    owner, sid, _ = sessions[0]
    events, _ = run(owner, session_id=sid, python="import os; print(os.getcwd())")
    assert output(events) == "/root\n"
    events, _ = run(client, image=BUSYBOX, command="pwd")  # a fresh container too
    assert output(events) == "/root\n"


@pytest.mark.parametrize("user,home", [("daemon", "/usr/sbin"), ("nobody", "/tmp")])
def test_another_user_starts_in_its_home_or_tmp(client, user, home):
    """A user's home from the image's /etc/passwd; none there (/nonexistent): /tmp."""
    sid = new_id("home")
    model = client.create_session(session_id=sid, image=PYTHON, memory="256m", user=user)
    try:
        events, _ = run(client, session_id=sid, command="pwd; id -un")
        assert output(events) == f"{home}\n{user}\n" and model["workdir"] == home
    finally:
        client.delete_session(sid)


def test_the_images_workdir_then_the_agents_option_then_the_request(
    docker_client, make_agent, client
):
    tag = f"jupyter-remote/workdir-test:{RUN_ID}"
    dockerfile = f"FROM {BUSYBOX}\nWORKDIR /srv/project\n".encode()
    docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
    try:
        events, _ = run(client, image=tag, command="pwd")
        assert output(events) == "/srv/project\n"
        configured = make_agent(extra=("--workdir", "/work"))
        for image in (tag, PYTHON):
            events, _ = run(configured.client, image=image, command="pwd")
            assert output(events) == "/work\n"
        events, _ = run(configured.client, image=PYTHON, command="pwd", workdir="/opt")
        assert output(events) == "/opt\n"
    finally:
        docker_client.images.remove(tag, force=True)


def test_the_server_passes_the_execution_count_on(agent, tmp_path):
    """kernel -> server -> agent -> runner: the server keeps the field in the agent's body."""
    from server_process import ServerProcess

    server = ServerProcess(tmp_path, [agent]).start()
    try:
        resp = requests.post(
            server.url + "/executions",
            json={
                "execution_id": new_id(),
                "owner": f"o-{uuid.uuid4().hex[:8]}",
                "image": PYTHON,
                "python": "def g():\n    raise ValueError('v')\ng()",
                "execution_count": 12,
            },
            headers={"Authorization": f"token {server.token}"},
            timeout=120,
        )
        events = [json.loads(line) for line in resp.content.splitlines()]
        trace = output(events, "stderr")
        assert "Cell In[12], line 3, in <module>" in trace and "Cell In[12], line 2, in g" in trace
    finally:
        server.stop()


def test_a_fresh_container_for_an_unknown_user_fails_in_one_line(agent, client):
    """Docker refuses to start it: the exit says why (no traceback in the agent's log)."""
    eid = new_id("nouser")
    _, end = run(client, execution_id=eid, image=BUSYBOX, command="true", user="nosuchuser")
    assert end["returncode"] == -1 and end["status"] == "failed"
    assert end["message"].startswith("user 'nosuchuser' is not known in image"), end
    with open(f"{agent.data_dir}/test-agent.log", errors="replace") as log:
        assert f"execution {eid} failed inside the agent" not in log.read()
