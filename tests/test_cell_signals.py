"""An interrupt or a cancel ends the whole cell (issue 18): on the runner path (a live
session) and on the exec path alike, the signal reaches every process the cell started,
whatever is left after the agent's grace is killed, the cell's real exit code is reported,
and a Python interpreter that was only interrupted keeps its state. Real Docker, real
agents; what is left in the container is read with `docker top`."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from conftest import (
    BUSYBOX,
    PYTHON,
    AgentProcess,
    new_id,
    output,
    remove_containers,
    run,
    run_then_stop,
)

GRACE = 1.5
# a job in the background of a non-interactive shell ignores SIGINT (POSIX): only the
# hard kill after the grace ends it; SIGTERM ends it at once
SHELL_JOB = "sleep 93 & echo ready; wait"
SHELL_JOB_TRAPPED = "trap 'echo trapped; exit 5' INT TERM; sleep 94 & echo ready; wait"
PY_CHILD = (
    "import subprocess, time\n"
    "child = subprocess.Popen(['sleep', '91'])\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
# a child that ignores both signals (the sleep under it inherits that): the grace's SIGKILL
PY_DEAF_CHILD = (
    "import subprocess, time\n"
    "child = subprocess.Popen(['sh', '-c', \"trap '' INT TERM; sleep 92\"])\n"
    "time.sleep(0.3)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture(scope="module")
def paths(docker_client, tmp_path_factory):
    """path -> (agent, {image: session container id}): one agent with the runner, one
    with every cell a docker exec (--no-runner); each has a busybox and a python session."""
    made = {}
    for path, extra in (("runner", ()), ("exec", ("--no-runner",))):
        agent = AgentProcess(
            str(tmp_path_factory.mktemp(f"signals-{path}")),
            extra=("--kill-grace", str(GRACE), "--warm-pool-size", "0", *extra),
        ).start()
        sessions = {}
        for image in (BUSYBOX, PYTHON):
            sid = new_id(f"sig-{path}")
            model = agent.client.create_session(session_id=sid, image=image, memory="256m")
            sessions[image] = (sid, model)
        made[path] = (agent, sessions)
    yield made
    for agent, _ in made.values():
        agent.stop()
        remove_containers(agent.containers(docker_client))


def left_behind(docker_client, container_id: str, words: str) -> list[str]:
    """The container's live processes whose command line holds `words` (zombies, already
    dead and waiting for their parent to read their status, are not counted)."""
    top = docker_client.containers.get(container_id).top(ps_args="-eo pid,stat,args")
    stat = top["Titles"].index("STAT")
    return [" ".join(p) for p in top["Processes"] if not p[stat].startswith("Z") and words in p[-1]]


SHELL_CASES = [
    # (signal, cell, exit code, bash's job killed only after the grace)
    ("SIGINT", SHELL_JOB, 130, True),
    ("SIGTERM", SHELL_JOB, 143, False),
    ("SIGINT", SHELL_JOB_TRAPPED, 5, True),
    ("SIGTERM", SHELL_JOB_TRAPPED, 5, False),
]


@pytest.mark.parametrize("path", ["runner", "exec"])
@pytest.mark.parametrize("sig,code,rc,after_grace", SHELL_CASES)
def test_a_shell_cells_background_job_does_not_outlive_it(
    paths, docker_client, path, sig, code, rc, after_grace
):
    agent, sessions = paths[path]
    image = PYTHON if path == "runner" else BUSYBOX  # bash on the runner path, sh on exec
    sid, model = sessions[image]
    assert model["path"] == path
    events, record, took = run_then_stop(agent.client, sig, session_id=sid, command=code)
    end = events[-1]
    assert left_behind(docker_client, model["container_id"], "sleep 9") == []
    assert end["returncode"] == rc and record["returncode"] == rc, end
    assert end["status"] == "cancelled" and end["cancelled"] is True
    assert f"the command exited with {rc}" in end["message"], end
    if "trapped" in code:
        assert output(events) == "ready\ntrapped\n"
    if after_grace and path == "runner":  # bash's job ignored SIGINT (busybox's does not):
        # killed at the end of the grace, and the message says so
        assert took >= GRACE - 0.1, took
        assert "killed with SIGKILL" in end["message"], end
    elif not after_grace:
        assert took < GRACE, took
        assert "SIGKILL" not in end["message"], end


@pytest.mark.parametrize("path", ["runner", "exec"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_python_cells_child_process_does_not_outlive_it(paths, docker_client, path, sig):
    agent, sessions = paths[path]
    sid, model = sessions[PYTHON]
    if path == "runner":
        run(agent.client, session_id=sid, python="kept = 41")
    events, record, took = run_then_stop(agent.client, sig, session_id=sid, python=PY_CHILD)
    end = events[-1]
    assert left_behind(docker_client, model["container_id"], "sleep 91") == []
    # the live interpreter turns both into a KeyboardInterrupt; `python3 -` dies of SIGTERM
    rc = 143 if (path, sig) == ("exec", "SIGTERM") else 130
    assert end["status"] == "cancelled" and end["returncode"] == rc == record["returncode"], end
    assert took < GRACE, took  # the child heard the signal: no wait for the grace
    trace = output(events, "stderr")
    assert ("KeyboardInterrupt" in trace) == (rc == 130), trace
    if path == "runner":  # the interpreter was only interrupted: its state is kept
        assert "a KeyboardInterrupt stopped the Python code" in end["message"], end
        assert "_on_sigint" not in trace and "pyworker" not in trace, trace
        after, _ = run(agent.client, session_id=sid, python="print(kept + 1)")
        assert output(after) == "42\n"


@pytest.mark.parametrize("path", ["runner", "exec"])
def test_a_python_cells_deaf_children_are_killed_after_the_grace(paths, docker_client, path):
    agent, sessions = paths[path]
    sid, model = sessions[PYTHON]
    events, _, took = run_then_stop(agent.client, "SIGINT", session_id=sid, python=PY_DEAF_CHILD)
    end = events[-1]
    assert left_behind(docker_client, model["container_id"], "sleep 92") == []
    assert end["returncode"] == 130 and end["status"] == "cancelled", end
    assert took >= GRACE - 0.1 and "killed with SIGKILL" in end["message"], (took, end)
    if path == "runner":
        notices = [e["message"] for e in events if e["event"] == "notice"]
        assert any("2 processes of the cell did not stop within" in n for n in notices), notices
        assert (
            "sleep" in notices[-1]
            and "the interpreter and its variables are kept" in (end["message"])
        )


@pytest.mark.parametrize("path", ["runner", "exec"])
def test_a_deaf_shell_and_its_job_are_killed_after_the_grace(paths, docker_client, path):
    agent, sessions = paths[path]
    sid, model = sessions[PYTHON if path == "runner" else BUSYBOX]
    code = "trap '' INT TERM; sleep 99 & echo ready; while :; do sleep 0.1; done"
    events, _, took = run_then_stop(agent.client, "SIGTERM", session_id=sid, command=code)
    end = events[-1]
    assert left_behind(docker_client, model["container_id"], "sleep 99") == []
    assert end["returncode"] == 137 and "it was killed with SIGKILL" in end["message"], end
    assert took >= GRACE - 0.1, took


def test_a_python_cell_that_swallows_the_interrupt_loses_its_interpreter_and_children(
    paths, docker_client
):
    """Runner path: code that outlives the grace is killed with its interpreter (the only
    way to end it), its child with it; the next cell gets a new interpreter."""
    agent, sessions = paths["runner"]
    sid, model = sessions[PYTHON]
    code = (
        "import subprocess, time\nchild = subprocess.Popen(['sleep', '95'])\n"
        "print('ready', flush=True)\nwhile True:\n    try:\n        time.sleep(0.05)\n"
        "    except KeyboardInterrupt:\n        pass\n"
    )
    events, _, took = run_then_stop(agent.client, "SIGTERM", session_id=sid, python=code)
    end = events[-1]
    assert left_behind(docker_client, model["container_id"], "sleep 95") == []
    assert end["returncode"] == 137 and "it was killed with SIGKILL" in end["message"], end
    assert took >= GRACE - 0.1
    after, _ = run(agent.client, session_id=sid, python="print('fresh')")
    assert output(after) == "fresh\n"


def test_a_timeout_ends_the_background_job_too(paths, docker_client):
    """A cell's own time limit is a stop like a cancel: its job does not outlive it."""
    agent, sessions = paths["runner"]
    sid, model = sessions[PYTHON]
    _, end = run(
        agent.client, session_id=sid, command="sleep 96 & trap 'exit 7' TERM; wait", timeout=1
    )
    assert end["status"] == "timed_out" and end["returncode"] == 7, end
    assert left_behind(docker_client, model["container_id"], "sleep 96") == []


def test_a_cell_that_ended_by_itself_keeps_its_background_process(paths, docker_client):
    """Only a stop ends what a cell left running: a server started on purpose lives on,
    and a later cell's interrupt does not reach it."""
    agent, sessions = paths["runner"]
    sid, model = sessions[PYTHON]
    _, started = run(
        agent.client,
        session_id=sid,
        python="import subprocess\nserver = subprocess.Popen(['sleep', '97'])",
    )
    assert started["returncode"] == 0
    events, _, _ = run_then_stop(agent.client, "SIGINT", session_id=sid, python=PY_CHILD)
    assert events[-1]["returncode"] == 130
    assert left_behind(docker_client, model["container_id"], "sleep 91") == []
    assert len(left_behind(docker_client, model["container_id"], "sleep 97")) == 1
    run(agent.client, session_id=sid, python="server.kill(); server.wait()")
    assert left_behind(docker_client, model["container_id"], "sleep 97") == []


# -- the runner itself, on the host (tests/test_runner.py's Runner) ------------------------


@pytest.fixture(scope="module")
def host_runner():
    from test_runner import Runner

    runner = Runner()
    yield runner
    runner.stop()


def live(words: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if words in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(cmd)
    return found


def test_a_job_in_a_group_of_its_own_still_hears_the_stop(host_runner):
    """bash's `set -m` puts a job in its own process group, out of reach of the group's
    signal; it is still in the cell's session, and that is where the stop looks."""
    client = host_runner.client
    cid = f"c-{uuid.uuid4().hex[:10]}"
    stream = client.run(cid, "shell", "set -m; sleep 98 & echo ready; wait")
    first = [next(stream), next(stream)]
    assert first[1].get("data") == "ready\n", first
    client.signal(cid, "SIGINT", grace=30)
    t0 = time.monotonic()
    end = list(stream)[-1]
    assert time.monotonic() - t0 < 10  # the job heard SIGINT itself: no wait for the grace
    assert end["status"] == "cancelled" and live("sleep 98") == []


def test_bash_export_p_is_read_back_or_refused():
    from jupyter_remote.runner.shell_state import parse_declare_x

    raw = (
        b'declare -x A="it\'s \\"q\\" \\\\ \\$x \\`y\\`"\ndeclare -x B\n'
        b"declare -rx C=$'l1\\nl2\\t\\001\\303\\251\\'\\\\'\n"
    )
    assert parse_declare_x(raw) == {"A": 'it\'s "q" \\ $x `y`', "C": "l1\nl2\t\x01é'\\"}
    assert parse_declare_x(b'declare -ax A=([0]="1")\n') is None  # then `env` is used
    assert parse_declare_x(b"export A='x'\n") is None


@pytest.mark.parametrize("bad", ["3", -1, 2**31, True])
def test_the_runner_refuses_a_bad_execution_count(host_runner, bad):
    from jupyter_remote.agent.runner_client import RunnerRefused

    with pytest.raises(RunnerRefused) as refused:
        list(
            host_runner.client.run(f"c-{uuid.uuid4().hex[:10]}", "python", "1", execution_count=bad)
        )
    assert refused.value.reason == "bad_request"


def test_the_runner_says_which_shell_runs_its_cells(host_runner):
    assert os.path.basename(host_runner.client.status()["shell"]) == "bash"
