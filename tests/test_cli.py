"""`jupyter-remote agent` start-up rules, daemon mode and `agent stop`."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from conftest import free_port


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
