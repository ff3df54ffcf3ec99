"""An interrupted command's last words are kept: trap output after the signal, its exit code."""

from __future__ import annotations

import time

import pytest

from conftest import BUSYBOX, PYTHON, new_id, output, run_then_stop

SHELL_TRAP = (
    "trap 'echo bye; echo gone >&2; exit 5' INT TERM; echo ready; while :; do sleep 0.1; done"
)
# The handler writes with os.write: the signal may land while print("ready") is still
# inside sys.stdout (the agent saw the bytes before print returned), and print() from a
# handler would then be a reentrant call into the same buffered writer.
PYTHON_TRAP = """
import os, signal, sys, time
def bye(signum, frame):
    os.write(1, ("bye from " + signal.Signals(signum).name + "\\n").encode())
    time.sleep(0.3)  # a handler that takes a moment is not cut short
    os.write(1, b"cleaned up\\n")
    sys.exit(5)
signal.signal(signal.SIGINT, bye)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


def _run_then_cancel(client, sig: str, **body) -> tuple[list[dict], dict]:
    """Start an execution, cancel it with `sig` once it printed "ready"; (events, model)."""
    events, model, _ = run_then_stop(client, sig, **body)
    return events, model


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_shell_trap_is_heard_and_its_exit_code_kept(client, sig):
    sid = new_id("trap")
    client.create_session(session_id=sid, image=BUSYBOX, memory="64m")
    try:
        events, model = _run_then_cancel(client, sig, session_id=sid, command=SHELL_TRAP)
    finally:
        client.delete_session(sid)
    exit_ = events[-1]
    assert output(events) == "ready\nbye\n" and output(events, "stderr").endswith("gone\n")
    assert exit_["event"] == "exit" and exit_["returncode"] == 5, exit_
    assert exit_["status"] == "cancelled" and exit_["cancelled"] is True
    assert "exited with 5" in exit_["message"]
    assert model["returncode"] == 5 and model["status"] == "cancelled"
    logged = list(client.execution_events(model["execution_id"]))
    assert output(logged) == "ready\nbye\n" and logged[-1]["returncode"] == 5


def test_a_python_handler_runs_to_its_end_in_a_fresh_container(client):
    events, model = _run_then_cancel(client, "SIGINT", image=PYTHON, python=PYTHON_TRAP)
    exit_ = events[-1]
    assert output(events) == "ready\nbye from SIGINT\ncleaned up\n", events
    assert exit_["returncode"] == 5 and exit_["status"] == "cancelled"
    assert model["returncode"] == 5


def test_a_command_that_ignores_the_signal_is_killed_after_the_grace(make_agent):
    node = make_agent(extra=("--kill-grace", "1.5"))
    sid = new_id("deaf")
    node.client.create_session(session_id=sid, image=BUSYBOX, memory="64m")
    t0 = time.monotonic()
    events, model = _run_then_cancel(
        node.client,
        "SIGINT",
        session_id=sid,
        command="trap '' INT TERM; echo ready; while :; do sleep 0.1; done",
    )
    elapsed = time.monotonic() - t0
    exit_ = events[-1]
    assert exit_["returncode"] == 137 and exit_["status"] == "cancelled", exit_
    assert "SIGKILL" in exit_["message"] and 1.5 <= elapsed < 10


def test_python_code_that_swallows_the_interrupt_is_killed_after_the_grace(make_agent):
    """Runner path: an interpreter that outlives the grace is killed and the exit says so;
    the runner's notice comes through as a plain event among a flood of output records
    that hold the same words (the agent looks for the notice in record heads only)."""
    from conftest import PYTHON

    node = make_agent(extra=("--kill-grace", "1.5"))
    sid = new_id("deafpy")
    node.client.create_session(session_id=sid, image=PYTHON, memory="128m")
    code = (
        "import time\nprint('ready', flush=True)\nwhile True:\n    try:\n"
        "        print('did not stop within x' * 1000, flush=True)\n"  # the words as output
        "        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass\n"
    )
    events, _ = _run_then_cancel(node.client, "SIGINT", session_id=sid, python=code)
    exit_ = events[-1]
    assert exit_["status"] == "cancelled", exit_
    assert "SIGKILL" in exit_["message"], exit_
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert any("did not stop within" in n for n in notices), notices
