"""Detached jobs: tasks, logs from offsets, stop, timeouts, and surviving kill -9 of the agent."""

from __future__ import annotations

import time

import pytest

from conftest import BUSYBOX, PYTHON, new_id
from jupyter_remote.protocol.errors import BadRequest, Conflict, NotFound


def wait_job(client, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if job["status"] not in ("pending", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_job_of_tasks_reports_each_exit_and_keeps_logs(agent, client, docker_client):
    job = client.submit_job(
        job_id=new_id("j"),
        image=BUSYBOX,
        tasks=[
            {"command": "echo one; echo warn >&2"},
            {"command": "echo two; exit 4"},
            {"python": "print('py')", "image": PYTHON},
        ],
    )
    assert job["status"] in ("pending", "running") and job["tasks_total"] == 3
    done = wait_job(client, job["job_id"])
    assert [t["returncode"] for t in done["tasks"]] == [0, 4, 0]
    assert done["status"] == "failed" and done["tasks_done"] == 3
    assert b"".join(client.job_logs(job["job_id"], 0)) == b"one\nwarn\n"
    assert b"".join(client.job_logs(job["job_id"], 0, offset=4)) == b"warn\n"
    assert b"".join(client.job_logs(job["job_id"], 2)) == b"py\n"
    assert agent.containers(docker_client, job=job["job_id"]) == []


def test_follow_streams_the_log_until_the_task_ends(client):
    job = client.submit_job(image=BUSYBOX, command="for i in 1 2 3; do echo $i; sleep 0.3; done")
    t0 = time.monotonic()
    data = b"".join(client.job_logs(job["job_id"], follow=True))
    assert data == b"1\n2\n3\n" and time.monotonic() - t0 >= 0.6
    assert client.job(job["job_id"])["status"] == "completed"


def test_stop_ends_running_and_pending_tasks_and_removes_containers(agent, client, docker_client):
    job = client.submit_job(
        image=BUSYBOX, parallelism=1, tasks=[{"command": "sleep 60"}, {"command": "echo never"}]
    )
    time.sleep(0.5)
    stopped = client.stop_job(job["job_id"])
    assert stopped["status"] == "stopped"
    assert [t["status"] for t in stopped["tasks"]] == ["stopped", "stopped"]
    assert agent.containers(docker_client, job=job["job_id"]) == []


def test_task_timeout_and_oom_are_reported(client):
    job = client.submit_job(
        tasks=[
            {"command": "sleep 30", "timeout": 1, "image": BUSYBOX},
            {"python": "x = bytearray(400 * 1024 * 1024)", "image": PYTHON, "memory": "64m"},
        ]
    )
    done = wait_job(client, job["job_id"])
    slow, hog = done["tasks"]
    assert slow["status"] == "timed_out" and slow["finished_at"] - slow["started_at"] < 5
    assert hog["status"] == "failed" and hog["oom_killed"] is True and hog["returncode"] == 137


def test_job_survives_kill_9_of_the_agent(make_agent, docker_client):
    node = make_agent()
    job = node.client.submit_job(
        job_id="survivor",
        image=BUSYBOX,
        command=("for i in 1 2 3 4 5 6; do echo line $i; sleep 0.4; done; exit 7"),
    )
    time.sleep(1.0)
    node.kill9()
    time.sleep(2.5)  # the task finishes while no agent is running
    node.start()
    done = wait_job(node.client, job["job_id"])
    task = done["tasks"][0]
    assert task["status"] == "failed" and task["returncode"] == 7
    assert b"".join(node.client.job_logs("survivor")) == b"".join(
        f"line {i}\n".encode() for i in range(1, 7)
    )
    assert node.containers(docker_client, job="survivor") == []


def test_task_still_running_after_restart_is_watched_to_the_end(make_agent):
    node = make_agent()
    node.client.submit_job(job_id="long", image=BUSYBOX, command="sleep 2; echo finished")
    time.sleep(0.5)
    node.kill9()
    node.start()
    done = wait_job(node.client, "long")
    assert done["status"] == "completed"
    assert b"".join(node.client.job_logs("long")) == b"finished\n"


def test_bad_job_requests_change_nothing(agent, client, docker_client):
    before = (len(client.jobs()), len(agent.containers(docker_client)))
    with pytest.raises(BadRequest, match="tasks"):
        client.submit_job(tasks=[])
    with pytest.raises(BadRequest, match="task 1"):
        client.submit_job(tasks=[{"command": "true"}, {"command": "true", "timeout": -5}])
    with pytest.raises(NotFound, match="never pull"):
        client.submit_job(command="true", image="missing/image:0")
    with pytest.raises(NotFound):
        client.job("no-such-job")
    with pytest.raises(BadRequest):
        client.job("bad id!")
    assert (len(client.jobs()), len(agent.containers(docker_client))) == before
    job = client.submit_job(job_id=new_id("j"), image=BUSYBOX, command="true")
    with pytest.raises(Conflict):
        client.submit_job(job_id=job["job_id"], image=BUSYBOX, command="true")
    with pytest.raises(BadRequest, match="no task 5"):
        list(client.job_logs(job["job_id"], task=5))


def test_change_feed_answers_at_the_first_change(client):
    now = client.job_changes(since=0, wait=0)
    assert now["epoch"] and now["version"] >= 0
    job = client.submit_job(image=BUSYBOX, command="sleep 0.5")
    first = client.job_changes(since=now["version"], wait=10)
    assert job["job_id"] in [j["job_id"] for j in first["jobs"]]
    version = client.job_changes(since=0, wait=0)["version"]
    while client.job(job["job_id"])["status"] != "completed":
        t0 = time.monotonic()
        changed = client.job_changes(since=version, wait=10)
        assert time.monotonic() - t0 < 2  # answered by the change, not by the 10 s wait
        version = changed["version"]
    quiet = time.monotonic()
    assert client.job_changes(since=version, wait=1)["jobs"] == []
    assert time.monotonic() - quiet >= 0.9
