"""One agent per data directory (data_lock.py): a second agent on the same directory waits
for the first to end before it reads anything, or gives up with one clear line."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import requests

from processes import AgentProcess


def _listening(agent: AgentProcess) -> bool:
    try:
        requests.get(f"{agent.url}/v1/health", timeout=1, headers={"Authorization": "Bearer t0ken"})
        return True
    except requests.ConnectionError:
        return False


def _start(agent: AgentProcess, wait: str) -> tuple[subprocess.Popen, str]:
    log = os.path.join(agent.data_dir, f"second-{agent.port}.log")
    env = {**os.environ, "JUPYTER_REMOTE_AGENT_LOCK_WAIT": wait}
    with open(log, "ab") as out:
        proc = subprocess.Popen(agent.argv(), stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, log


def test_a_second_agent_waits_for_the_first_then_starts(make_agent, tmp_path):
    first = make_agent(extra=("--warm-pool-size", "0"))
    second = AgentProcess(first.data_dir, extra=("--warm-pool-size", "0"))
    proc, log = _start(second, "60")
    try:
        time.sleep(2)
        assert proc.poll() is None and not _listening(second)
        assert "holds data directory" in open(log).read()
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        deadline = time.monotonic() + 30
        while not _listening(second):
            assert proc.poll() is None, open(log).read()[-2000:]
            assert time.monotonic() < deadline, open(log).read()[-2000:]
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_second_agent_gives_up_with_one_line(make_agent):
    first = make_agent(extra=("--warm-pool-size", "0"))
    second = AgentProcess(first.data_dir, extra=("--warm-pool-size", "0"))
    proc, log = _start(second, "1")
    assert proc.wait(30) != 0
    text = open(log).read()
    assert "another agent has used data directory" in text and "Traceback" not in text
    assert _listening(first)
