"""`jupyter-remote agent` start-up rules, daemon mode, `agent stop` and `agent cleanup`."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from conftest import BUSYBOX, PYTHON, RUN_ID, free_port, remove_containers
from jupyter_remote.agent.client import AgentClient


def agent_cmd(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_remote", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def test_refuses_a_non_loopback_bind_without_a_token(tmp_path):
    result = agent_cmd("--listen", "0.0.0.0:9599", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0:9599 without a token" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_listen_and_unreadable_token_file_are_one_line_errors(tmp_path):
    bad = agent_cmd("--listen", "nowhere", "--data-dir", str(tmp_path))
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    missing = agent_cmd("--token-file", str(tmp_path / "nope"), "--data-dir", str(tmp_path))
    assert missing.returncode == 2 and "cannot read --token-file" in missing.stderr


def test_daemon_mode_writes_pid_and_log_and_stops(docker_client, tmp_path):
    port = free_port("127.0.0.1")
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    env = {**os.environ, "JUPYTER_REMOTE_AGENT_DATA_DIR": str(tmp_path / "data")}
    started = agent_cmd(
        "--daemon",
        "--listen",
        f"127.0.0.1:{port}",
        "--token-file",
        str(token_file),
        "--node-id",
        "pytest-daemon",
        env=env,
    )
    assert started.returncode == 0, started.stderr
    assert "daemon" in started.stdout
    pid_file = tmp_path / "data" / "agent.pid"
    pid = int(pid_file.read_text())
    health = requests.get(
        f"http://127.0.0.1:{port}/v1/health", headers={"Authorization": "Bearer s3cret"}, timeout=10
    ).json()
    assert health["node_id"] == "pytest-daemon"
    assert "listening" in (tmp_path / "data" / "agent.log").read_text()
    stopped = agent_cmd("stop", env=env)
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
    assert not pid_file.exists()
    again = agent_cmd("stop", env=env)
    assert again.returncode == 1 and "no agent pid file" in again.stderr


def test_help_all_shows_the_real_defaults():
    result = agent_cmd("--help-all")
    assert result.returncode == 0, result.stderr
    defaults = {}
    option = None
    for line in result.stdout.splitlines():
        if line.startswith("--"):
            option = line[2:].split("=")[0]
        elif line.strip().startswith("Default:") and option:
            defaults[option] = line.split("Default:", 1)[1].strip()
    assert defaults["idle-timeout"] == "3600.0" and defaults["default-timeout"] == "1800.0"
    assert defaults["memory"] == "'2g'" and defaults["cpus"] == "1.0"
    assert defaults["pids-limit"] == "1024" and defaults["listen"] == "'127.0.0.1:9527'"
    assert defaults["default-image"] == "'jupyter-remote/python:local'"
    assert defaults["max-execution-bytes"] == str(32 << 20)


def test_environment_variables_still_set_options_and_bad_ones_are_one_line_errors(tmp_path):
    env = {**os.environ, "JUPYTER_REMOTE_AGENT_LISTEN": "nowhere"}
    from_env = agent_cmd("--data-dir", str(tmp_path), env=env)
    assert from_env.returncode == 2 and "HOST:PORT" in from_env.stderr
    env = {**os.environ, "JUPYTER_REMOTE_AGENT_CPUS": "lots"}
    bad = agent_cmd("--data-dir", str(tmp_path), env=env)
    assert bad.returncode == 2 and "JUPYTER_REMOTE_AGENT_CPUS='lots' is not valid" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_numbers_out_of_range_are_refused_at_start(tmp_path):
    for flag, value, words in [
        ("--kill-grace", "nan", "--kill-grace must be between 0 and 3600"),
        ("--cpu-max", "150", "--cpu-max must be between 0 and 100"),
        ("--idle-timeout", "-1", "--idle-timeout must be >= 0"),
        ("--max-execution-bytes", "0", "--max-execution-bytes must be >= 1"),
    ]:
        result = agent_cmd(flag, value, "--data-dir", str(tmp_path))
        assert result.returncode == 2 and words in result.stderr, (flag, result.stderr)
        assert "Traceback" not in result.stderr


def test_an_idle_timeout_from_the_environment_reaches_the_sessions(make_agent, monkeypatch):
    monkeypatch.setenv("JUPYTER_REMOTE_AGENT_IDLE_TIMEOUT", "77")  # the agent inherits it
    node = make_agent()
    model = node.client.create_session(image=BUSYBOX, memory="64m")
    assert model["idle_timeout"] == 77
    node.client.delete_session(model["session_id"])


def test_stop_remove_containers_and_cleanup_remove_what_the_agent_made(docker_client, tmp_path):
    """Sessions on both paths (runner and exec) outlive a plain stop, as designed; the
    clean-up removes them with their runner directories, refusing while the agent runs."""
    port = free_port("127.0.0.1")
    node_id = f"pytest-{RUN_ID}-cleanup"
    data = tmp_path / "data"
    env = {**os.environ, "JUPYTER_REMOTE_AGENT_DATA_DIR": str(data)}
    started = agent_cmd(
        "--daemon",
        "--listen",
        f"127.0.0.1:{port}",
        "--node-id",
        node_id,
        "--warm-pool-size",
        "0",
        env=env,
    )
    assert started.returncode == 0, started.stderr
    mine = {"label": [f"jupyter-remote.node={node_id}"]}
    try:
        client = AgentClient(f"http://127.0.0.1:{port}")
        for image in (BUSYBOX, PYTHON):
            client.create_session(image=image, memory="64m")
        assert len(docker_client.containers.list(all=True, filters=mine)) == 2
        assert os.listdir(data / "r"), "the python session has a runner directory"

        refused = agent_cmd("cleanup", env=env)
        assert refused.returncode == 1 and "is running" in refused.stderr, refused
        assert "agent stop --remove-containers" in refused.stderr
        assert len(docker_client.containers.list(all=True, filters=mine)) == 2

        stopped = agent_cmd("stop", "--remove-containers", env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped" in stopped.stdout
        assert f"removed 2 session containers of node {node_id!r}" in stopped.stdout
        assert docker_client.containers.list(all=True, filters=mine) == []
        assert os.listdir(data / "r") == []

        again = agent_cmd("cleanup", env=env)
        assert again.returncode == 0 and again.stderr == "", again
        assert again.stdout.strip() == f"no container of node {node_id!r} left to remove"
    finally:
        agent_cmd("stop", env=env)
        remove_containers(docker_client.containers.list(all=True, filters=mine))


def test_cleanup_without_a_noted_node_is_one_line(tmp_path):
    result = agent_cmd("cleanup", "--data-dir", str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: no node id noted in {tmp_path}; give --node-id (an agent's default is its "
        "host name, plus -PORT when its port is not 9527)"
    )
