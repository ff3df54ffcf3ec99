"""The runner path: a cell sent once to its container's runner over a unix socket, its
records copied into the log as they come, signals through the runner, and the runner's
spools of finished cells forgotten (docs/runner.md)."""

from __future__ import annotations

import logging
import os
import threading
import time

from jupyter_remote.agent.deadlines import Deadlines
from jupyter_remote.agent.executions.record import Execution, Killed, RunnerGone, runner_id
from jupyter_remote.agent.runner_client import (
    RunnerClient,
    RunnerError,
    RunnerRefused,
    RunnerUnavailable,
)
from jupyter_remote.protocol import records
from jupyter_remote.protocol.rules import MAX_FORGET

log = logging.getLogger("jupyter_remote.agent")

FORGET_AFTER = 2.0  # seconds a finished cell's spool waits for the runner's next cell


def client(ex: Execution) -> RunnerClient:
    return RunnerClient(os.path.join(ex.runner_dir, "runner.sock"))


def escalated(block: bytes) -> bool:
    """A notice in these records says the runner killed a cell that outlived its grace."""
    return any(
        line.startswith(b'{"event":"notice"') and b"did not stop within" in line
        for line in records.plain_lines(block)
    )


class RunnerPath:
    """Sends cells to runners and keeps, per runner directory, the ids of finished cells
    whose spool the runner may drop: sent with that runner's next cell (one connection per
    cell, not two), or by themselves after FORGET_AFTER seconds."""

    def __init__(self, deadlines: Deadlines, kill_grace: float) -> None:
        self.deadlines = deadlines
        self.kill_grace = kill_grace
        self._lock = threading.Lock()
        self._to_forget: dict[str, list[str]] = {}

    def send(self, ex: Execution):
        """The run request, once (unless it was cancelled first); the runner's stream."""
        with ex.lock:
            if ex.kill_reason:
                raise Killed()
            code, ex.code = ex.code, None
            ex.runner_started = True
            forget = self.take_forgets(ex.runner_dir)
            try:
                return client(ex).run(
                    runner_id(ex.execution_id),
                    ex.runner_kind,
                    code,
                    env=ex.env or None,
                    workdir=ex.workdir,
                    forget=forget,
                    execution_count=ex.execution_count,
                )
            except RunnerUnavailable as exc:
                self.forget_later(ex.runner_dir, forget)
                ex.runner_started = False
                raise RunnerGone(f"the container's runner did not take the cell: {exc}") from None

    def pump(self, ex: Execution, stream) -> dict:
        """Runner events into the log until the exit event, which it returns; a broken
        connection is picked up again with attach at the spool offset reached (the cell
        itself is never re-sent)."""
        # The runner's spool is the log's own format (protocol/records.py), so its output
        # records and display and notice lines are appended as they came, undecoded and a
        # whole read at a time; only its own started and exit lines are not copied: the
        # agent writes its own.
        append = ex.log.append_raw
        runner, rid = client(ex), runner_id(ex.execution_id)
        broken = 0
        while True:
            try:
                for block in stream.blocks():
                    if block.startswith(b'{"event":"started"'):
                        block = block[block.index(b"\n") + 1 :]
                    if escalated(block):  # heads and plain lines only: output is skipped
                        ex.escalated = True
                    if block:
                        append(block)
                if stream.exit is not None:
                    return stream.exit
                raise RunnerUnavailable("the runner's stream ended without an exit event")
            except RunnerUnavailable as exc:
                broken += 1
                offset = stream.offset
                stream.close()
                if broken > 3:
                    raise RunnerGone(f"lost the container's runner: {exc}") from None
                time.sleep(0.1 * broken)
                try:
                    stream = runner.attach(rid, offset)
                except RunnerError as again:
                    raise RunnerGone(f"lost the container's runner: {again}") from None
            except RunnerRefused as exc:
                raise RunnerGone(f"the runner refused: {exc}") from None

    def signal(self, ex: Execution, name: str) -> bool:
        """The runner's `signal` op: the cell's process group (shell) or a KeyboardInterrupt
        (Python), SIGKILL after the grace. No host PID needed. False: the runner is gone."""
        runner, rid = client(ex), runner_id(ex.execution_id)
        deadline = time.monotonic() + 5
        while not ex.done.is_set():
            try:
                runner.signal(rid, name, grace=self.kill_grace)
                return True
            except RunnerRefused as exc:
                # unknown_id: the run request is on its way; not_running: it just ended
                if exc.reason != "unknown_id" or time.monotonic() > deadline:
                    return True
                time.sleep(0.02)
            except RunnerUnavailable as exc:
                log.warning("could not signal %s: %s", ex.execution_id, exc)
                return False
        return True

    # -- forgetting ------------------------------------------------------------------------
    def forget_later(self, runner_dir: str, ids: list[str]) -> None:
        """All of these cells' output is on our disk now: their spools may go, with the
        runner's next cell, or by themselves if none comes within FORGET_AFTER seconds."""
        with self._lock:
            pending = self._to_forget.setdefault(runner_dir, [])
            first = not pending
            pending.extend(ids)
            del pending[:-MAX_FORGET]
        if first:
            self.deadlines.arm(FORGET_AFTER, lambda: self._forget_now(runner_dir))

    def _forget_now(self, runner_dir: str) -> None:
        """The runner's forget op for what no next cell took along (the runner may still
        count a cell as running for a moment after its exit line)."""
        runner = RunnerClient(os.path.join(runner_dir, "runner.sock"))
        for rid in self.take_forgets(runner_dir):
            for _ in range(50):
                try:
                    runner.forget(rid)
                    break
                except RunnerRefused as exc:
                    if exc.reason != "running":
                        break
                    time.sleep(0.02)
                except RunnerError as exc:
                    log.debug("forget %s: %s", rid, exc)
                    return

    def take_forgets(self, runner_dir: str) -> list[str]:
        with self._lock:
            return self._to_forget.pop(runner_dir, [])
