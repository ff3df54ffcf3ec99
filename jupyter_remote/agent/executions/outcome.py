"""How an execution ended, in its record's words: status, flags and the message."""

from __future__ import annotations

from jupyter_remote.agent.executions.record import Execution
from jupyter_remote.agent.oom import OomWatcher
from jupyter_remote.protocol.common import EXECUTION_FINAL


def how_it_ended(ex: Execution, kill_grace: float, python_interrupt: bool = False) -> str:
    """What the signal did, in words: the command's own exit, a KeyboardInterrupt in the
    live session's Python code, or SIGKILL after the grace (to the command, or to what it
    left running)."""
    sig = ex.kill_signal or "SIGTERM"
    rc = ex.returncode
    if ex.exec_id is None and not ex.runner_started:
        return "it was stopped before it started"
    if ex.escalated and rc == 137:  # the command itself outlived the grace
        return (
            f"{sig} was sent; still running after the {kill_grace:g} s grace, "
            f"it was killed with SIGKILL (returncode {rc})"
        )
    if python_interrupt:
        said = (
            f"{sig} was sent: a KeyboardInterrupt stopped the Python code (returncode {rc}); "
            "the interpreter and its variables are kept"
        )
    else:
        said = f"{sig} was sent; the command exited with {rc}"
    if ex.escalated:
        said += (
            f"; what it had started and was still running after the {kill_grace:g} s grace "
            "was killed with SIGKILL"
        )
    return said


def classify(
    ex: Execution,
    oom: OomWatcher,
    oom_before: int,
    kill_grace: float,
    python_interrupt: bool = False,
) -> None:
    """Status from the return code and why it was stopped (timeout, cancel, out of memory)."""
    rc = ex.returncode
    if ex.kill_reason == "timeout":
        ex.status, ex.timed_out = "timed_out", True
        ended = how_it_ended(ex, kill_grace, python_interrupt)
        ex.message = f"timed out after {ex.timeout:g} s; {ended}"
    elif ex.kill_reason:
        ex.status, ex.cancelled = "cancelled", True
        ended = how_it_ended(ex, kill_grace, python_interrupt)
        ex.message = f"cancelled ({ex.kill_reason}); {ended}"
    elif rc == 137 and oom.wait_for_more(ex.container_id, oom_before, 1.0):
        ex.status, ex.oom_killed = "failed", True
        ex.message = "killed by the kernel: out of memory (the container's memory limit)"
    else:
        ex.status = "completed" if rc == 0 else "failed"


def from_runner(
    ex: Execution, end: dict, oom: OomWatcher, oom_before: int, kill_grace: float
) -> None:
    """The record from the runner's exit event: its code, or the runner's own verdict
    (timed out, cancelled, lost) where the agent did not stop the cell itself."""
    ex.returncode = end.get("returncode")
    if ex.returncode is None:
        ex.returncode = -1
    status = end.get("status")
    if ex.kill_reason and ex.returncode == 137 and ex.kill_signal != "SIGKILL":
        ex.escalated = True
    if ex.kill_reason or status in ("completed", "failed"):
        interrupted = end.get("message") == "KeyboardInterrupt"
        classify(ex, oom, oom_before, kill_grace, interrupted)
        if ex.status == "failed" and not ex.message and end.get("message"):
            ex.message = end["message"]
    else:
        ex.status = status if status in EXECUTION_FINAL else "failed"
        ex.message = end.get("message")
        ex.timed_out = status == "timed_out"
        ex.cancelled = status == "cancelled"


def runner_gone(ex: Execution, exc: Exception, node_id: str) -> None:
    """The runner could not be reached or refused: failed, or cancelled if it was asked."""
    ex.returncode, ex.status = -1, "failed"
    ex.message = (
        f"cancelled ({ex.kill_reason}); {exc}" if ex.kill_reason else f"{exc} (node {node_id!r})"
    )
    if ex.kill_reason:
        ex.status, ex.cancelled = "cancelled", True


def docker_failed(ex: Execution, exc: Exception, node_id: str) -> None:
    ex.returncode, ex.status = -1, "failed"
    if ex.kill_reason:
        ex.message = f"cancelled ({ex.kill_reason})"
    else:
        ex.message = f"Docker error on node {node_id!r}: {exc}"
