"""The exec path: a cell as one `docker exec`, for images without a runner (or fresh
containers the warm pool had none for); its output framed into the log's records."""

from __future__ import annotations

import signal
import time

from docker.errors import DockerException

from jupyter_remote.agent.docker_io import exec_output
from jupyter_remote.agent.executions.record import Execution, Killed
from jupyter_remote.agent.processes import kill_tree
from jupyter_remote.protocol import records
from jupyter_remote.protocol.rules import incomplete_tail


def run(api, ex: Execution, arm_timer) -> object:
    """Create the exec (unless it was cancelled first), arm its timer, copy its output into
    the log and read its exit code. Returns the timer."""
    with ex.lock:
        if ex.kill_reason:
            raise Killed()
        ex.exec_id = api.exec_create(
            ex.container_id,
            ex.argv,
            stdin=True,
            environment=ex.env or None,
            workdir=ex.workdir,
        )["Id"]
    timer = arm_timer(ex, ex.timeout)
    try:
        stdin, ex.stdin = ex.stdin, None
        pump(ex, exec_output(api, ex.exec_id, stdin))
        ex.returncode = exit_code(api, ex.exec_id)
    except BaseException:
        if timer:
            timer.cancel()
        raise
    return timer


def pump(ex: Execution, stream) -> None:
    """Copy the exec stream into the log as output records (protocol/records.py), each cut
    at a character boundary (a frame may end inside one)."""
    held = {"stdout": b"", "stderr": b""}
    append = ex.log.append_raw

    def put(kind: str, data: bytes) -> None:
        if held[kind]:
            data = held[kind] + data
        cut = incomplete_tail(data)
        held[kind], data = (data[-cut:], data[:-cut]) if cut else (b"", data)
        if data:
            append(records.output_record(kind, data))

    for out, err in stream:
        if out:
            put("stdout", out)
        if err:
            put("stderr", err)
    for kind, rest in held.items():
        if rest:  # a character torn at the very end: as it is (read as U+FFFD)
            append(records.output_record(kind, rest))


def exit_code(api, exec_id: str) -> int:
    """The exec's real exit code; Docker may close the stream a moment before it has it."""
    deadline = time.monotonic() + 10
    while True:
        state = api.exec_inspect(exec_id)
        if state.get("ExitCode") is not None and not state.get("Running"):
            return state["ExitCode"]
        if time.monotonic() > deadline:
            raise RuntimeError("Docker did not report the command's exit code within 10 s")
        time.sleep(0.02)


def kill(api, ex: Execution, exec_id: str, sig: signal.Signals, grace: float) -> bool:
    """Signal the exec's process tree, SIGKILL after `grace`; False when there was no
    process to signal (the caller removes a fresh container instead)."""
    try:
        pid = api.exec_inspect(exec_id).get("Pid")
    except DockerException:
        pid = None
    return bool(pid) and kill_tree(
        pid, grace, sig, on_escalate=lambda: setattr(ex, "escalated", True)
    )
