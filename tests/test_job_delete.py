"""Deleting jobs: real server, real agents, real Docker (network none)."""

from __future__ import annotations

import io
import os
import time
from contextlib import redirect_stdout

import pytest
from IPython.core.error import UsageError

from conftest import BUSYBOX, exported_stack, remote_shell
from jupyter_remote.kernel.api import RemoteEnvironment
from jupyter_remote.kernel.client import RemoteClient
from jupyter_remote.protocol.errors import Conflict, NotFound


@pytest.fixture(scope="module")
def stack(docker_client):
    yield from exported_stack(docker_client)


def _agent_dir(stack, job: dict, index: int = 0) -> str:
    task = job["tasks"][index]
    agent = next(a for a in stack.agents if os.path.isdir(_jobs(a, task)))
    return _jobs(agent, task)


def _jobs(agent, task: dict) -> str:
    return os.path.join(agent.data_dir, "jobs", task["agent_job_id"])


def test_delete_removes_outputs_and_log_and_the_id_stays_refused(stack):
    env = RemoteEnvironment("deleted", image=BUSYBOX)
    env.add("mkdir /out && echo kept > /out/a.txt && echo logged", outputs=["/out"])
    final = env.submit(autostop=True)
    assert final["status"] == "completed", final
    job_dir = _agent_dir(stack, final)
    assert os.path.isfile(os.path.join(job_dir, "task-0", "outputs", "0.tar"))
    assert os.path.isfile(os.path.join(job_dir, "task-0", "output.log"))

    gone = env.delete()
    assert gone["deleted"] is True and gone["job_id"] == final["job_id"]
    assert not os.path.exists(job_dir)  # record, log and outputs, on the agent's disk
    client = RemoteClient()
    with pytest.raises(NotFound):
        client.job(final["job_id"])
    with pytest.raises(NotFound):
        client.get_output(final["job_id"], 0, "/out", ".", False)
    with pytest.raises(Conflict) as err:  # run once: a deleted id never runs again
        client.submit_job(job_id=final["job_id"], image=BUSYBOX, command="true")
    assert err.value.reason == "duplicate_job"
    agent = next(a for a in stack.agents if job_dir.startswith(a.data_dir + os.sep))
    with pytest.raises(Conflict) as err:  # ...on the agent too
        agent.client.submit_job(
            job_id=final["tasks"][0]["agent_job_id"], image=BUSYBOX, command="true"
        )
    assert err.value.reason == "duplicate_job"
    with pytest.raises(NotFound):
        client.delete_job(final["job_id"])


def test_delete_of_a_running_job_is_409_and_removes_nothing(stack):
    client = RemoteClient()
    job = client.submit_job(image=BUSYBOX, command="sleep 60")
    deadline = time.time() + 30
    while client.job(job["job_id"])["tasks"][0]["agent_job_id"] is None:
        assert time.time() < deadline
        time.sleep(0.2)
    job = client.job(job["job_id"])
    job_dir = _agent_dir(stack, job)
    with pytest.raises(Conflict) as err:
        client.delete_job(job["job_id"])
    assert err.value.reason == "job_not_final" and "\n" not in err.value.message
    assert os.path.isdir(job_dir) and client.job(job["job_id"])["status"] == "running"
    agent = next(a for a in stack.agents if job_dir.startswith(a.data_dir + os.sep))
    with pytest.raises(Conflict) as err:  # the agent refuses on its own too
        agent.client.delete_job(job["tasks"][0]["agent_job_id"])
    assert err.value.details.get("status") == "running"
    client.stop_job(job["job_id"])
    assert client.wait_job(job["job_id"], 60)["status"] == "stopped"
    client.delete_job(job["job_id"])
    assert not os.path.exists(job_dir)


def test_unknown_is_404_and_the_magic_errors_in_one_line(stack):
    client = RemoteClient()
    with pytest.raises(NotFound):
        client.delete_job("j-no-such-job")
    ip = remote_shell()
    with pytest.raises(UsageError) as err:
        ip.run_line_magic("remote_delete", "j-no-such-job")
    assert "\n" not in str(err.value) and "j-no-such-job" in str(err.value)
    job = client.submit_job(image=BUSYBOX, command="true")
    assert client.wait_job(job["job_id"], 60)["status"] == "completed"
    out = io.StringIO()
    with redirect_stdout(out):
        ip.run_line_magic("remote_delete", job["job_id"])
    assert "deleted" in out.getvalue()
