"""The runner as the main process of a real container, reached over a bind-mounted socket."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

import pytest

import jupyter_remote.runner
from jupyter_remote.agent.containers import PROTOCOL_MOUNT, PROTOCOL_SRC
from jupyter_remote.agent.runner_client import RunnerClient
from processes import PYTHON, RUN_ID

RUNNER_DIR = os.path.dirname(jupyter_remote.runner.__file__)


@pytest.fixture
def container(docker_client):
    host_dir = tempfile.mkdtemp(prefix="jrd-")
    c = docker_client.containers.run(
        PYTHON,
        [
            "python3",
            "/opt/jupyter-remote/runner",
            "--socket",
            "/run/jupyter-remote/runner.sock",
            "--spool",
            "/run/jupyter-remote/spool",
        ],
        detach=True,
        network_mode="none",
        mem_limit="256m",
        volumes={
            RUNNER_DIR: {"bind": "/opt/jupyter-remote/runner", "mode": "ro"},
            PROTOCOL_SRC: {"bind": PROTOCOL_MOUNT, "mode": "ro"},  # records, rules
            host_dir: {"bind": "/run/jupyter-remote", "mode": "rw"},
        },
        labels={
            "jupyter-remote.managed": "1",
            "jupyter-remote.node": f"pytest-{RUN_ID}-runner-{uuid.uuid4().hex[:6]}",
        },
    )
    try:
        client = RunnerClient(os.path.join(host_dir, "runner.sock"))
        try:
            client.wait_ready(15)
        except Exception as exc:
            c.reload()
            raise AssertionError(f"runner did not start ({c.status}): {c.logs().decode()}") from exc
        yield c, client, host_dir
    finally:
        c.remove(force=True)
        shutil.rmtree(host_dir, ignore_errors=True)


def text(events, stream="stdout"):
    return "".join(e["data"] for e in events if e["event"] == stream)


def test_runner_in_a_container(container):
    c, client, host_dir = container
    status = client.status()
    assert status["pid"] == 1 and not status["python"]["alive"]
    idle_rss = status["rss_bytes"]
    assert idle_rss < 15 * 1024 * 1024, idle_rss

    events = list(client.run("sh-1", "shell", "cd /tmp; export A=1; echo $$ >&2"))
    assert events[-1]["returncode"] == 0
    events = list(client.run("sh-2", "shell", "pwd; echo $A; cat /etc/os-release | head -1"))
    assert text(events).startswith("/tmp\n1\n") and events[-1]["status"] == "completed"

    list(client.run("py-1", "python", "x = 41"))
    list(client.run("py-1b", "python", "import sys; v = sys.version_info[:2]"))
    events = list(client.run("py-2", "python", "print(x + 1)\nv"))
    assert text(events) == "42\n", events
    assert [e["data"]["text/plain"] for e in events if e["event"] == "display"] == ["(3, 11)"]

    # the spool is on the host: nothing is lost if the agent dies mid-cell
    assert os.path.exists(os.path.join(host_dir, "spool", "py-2.ndjson"))

    # zombies of orphaned grandchildren are reaped by the runner (PID 1)
    list(client.run("sh-3", "shell", "(sleep 0.1 &) ; sleep 0.3"))
    top = c.top(ps_args="-eo pid,stat,comm")
    assert not [p for p in top["Processes"] if "Z" in p[1]], top

    # status after the Python worker started: the runner itself stays small
    status = client.status()
    assert status["python"]["alive"] and status["rss_bytes"] < 15 * 1024 * 1024

    t0 = time.monotonic()
    c.stop(timeout=10)
    assert time.monotonic() - t0 < 2
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 0, c.logs().decode()


def test_runner_stops_fast_while_cells_run(container):
    c, client, _ = container
    shell = client.run("long-sh", "shell", "echo go; sleep 60")
    py = client.run("long-py", "python", "import time\nprint('go', flush=True)\ntime.sleep(60)")
    for stream in (shell, py):
        for event in stream:
            if event["event"] == "stdout":
                break
    t0 = time.monotonic()
    c.stop(timeout=10)
    assert time.monotonic() - t0 < 2
    for stream in (shell, py):
        list(stream)
        assert stream.exit["status"] == "cancelled"
