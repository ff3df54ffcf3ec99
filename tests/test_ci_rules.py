"""The rule that a missing Docker engine fails Docker tests under CI=true, and skips them else."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(__file__)


def run_without_docker(ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            os.path.join(HERE, "test_sessions.py"),
            "-k",
            "bad_session",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=os.path.dirname(HERE),
    )


def test_docker_tests_fail_under_ci_when_no_engine_is_reachable():
    result = run_without_docker(ci=True)
    assert result.returncode == 1, result.stdout
    assert "no usable Docker engine" in result.stdout and "1 error" in result.stdout


def test_docker_tests_skip_outside_ci_when_no_engine_is_reachable():
    result = run_without_docker(ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
