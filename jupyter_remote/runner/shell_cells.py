"""Shell cells: each run by bash (else ``/bin/sh``) in its own session and process group, starting
from the carried directory and exported environment (shell_state.py), its output pumped
as it comes; and the spare shell started ahead of the next cell.

fork + exec of /bin/sh is most of a short shell cell's time in the runner. So, once a shell
cell has ended (its carried state is known), the next cell's shell is started at once, with
that state, and waits for its cell on a pipe; a cell with the same carried state and no
env/workdir of its own takes it. Any other cell (or a stale spare) starts its shell itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

try:
    from . import procs
    from .children import Child, Reaper, killpg_quietly
    from .pump import pump
    from .shell_state import ShellState, shell_wrapper, spare_wrapper
    from .signals import settle
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    import procs
    from children import Child, Reaper, killpg_quietly
    from pump import pump
    from shell_state import ShellState, shell_wrapper, spare_wrapper
    from signals import settle

PIPE_GRACE = 0.5  # how long pipes held open by a finished shell cell's background jobs are read
SPARE_DELAY = 0.004  # after a shell cell's exit, before its successor's shell is started


def start_shell(shell: str, args: list, stdin, cwd: str, env: dict) -> subprocess.Popen:
    """``SHELL -c ARGS...`` in its own session and process group, output on two pipes."""
    return subprocess.Popen(
        [shell, "-c", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )


class Spare:
    """A shell started ahead of its cell, with the carried state of ``generation``."""

    def __init__(self, proc: subprocess.Popen, child: Child, generation: int, cwd: str):
        self.proc = proc
        self.child = child
        self.generation = generation
        self.cwd = cwd

    def discard(self) -> None:
        """Not wanted: closing its pipe ends it (the reaper collects it)."""
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class Shell:
    """Runs shell cells (several may run at once) and takes their signals."""

    soft_signal = signal.SIGTERM  # a cancel or a timeout asks the cell's group to end

    def __init__(self, reaper: Reaper, work: str, stopping: threading.Event):
        self.reaper = reaper
        self.work = work  # where cell files and state files are written
        self.stopping = stopping
        self.state = ShellState()
        self.spare = None  # a Spare shell for the next shell cell, or None
        self.spare_lock = threading.Lock()

    def prepare(self) -> None:
        os.makedirs(self.work, exist_ok=True)
        self.state.prepare(self.reaper)
        for name in os.listdir(self.work):
            try:
                os.unlink(os.path.join(self.work, name))
            except OSError:
                pass

    def close(self) -> None:
        """The runner is stopping: the spare shell is ended."""
        with self.spare_lock:
            spare, self.spare = self.spare, None
        if spare is not None:
            spare.discard()

    # -- signals (signals.py) --------------------------------------------------------------
    def interrupt(self, cell, signum: int) -> None:
        """The cell's process group, as a terminal's Ctrl-C; then each other process of its
        session (a job that ``set -m`` put in a group of its own)."""
        if not cell.pid:
            return
        ended = cell.ran.is_set()  # then only its background jobs are left
        found = procs.of_shell(cell.pid, leader_gone=ended, group=ended)
        if not ended:
            killpg_quietly(cell.pid, signum)
        procs.send(found, signum)  # each once: not those the group signal reached

    def kill(self, cell, why: str) -> None:
        if cell.pid and not cell.ran.is_set():
            killpg_quietly(cell.pid, signal.SIGKILL)

    def processes(self, cell) -> dict:
        if not cell.pid:
            return {}
        return procs.of_shell(cell.pid, leader_gone=cell.ran.is_set())

    def sweep(self, cell) -> list:
        """SIGKILL to every process of the cell: the names of those that were left."""
        self.kill(cell, "")
        return procs.kill_all(lambda: self.processes(cell))

    # -- cells -----------------------------------------------------------------------------
    def run(self, cell, req: dict) -> None:
        base = os.path.join(self.work, cell.id)
        code_path, state = base + ".sh", base + ".state"
        with open(code_path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(req["code"])
            if req["code"] and not req["code"].endswith("\n"):
                f.write("\n")
        env, cwd, generation = self.state.current()
        overlay = req.get("env") or {}
        for key, value in overlay.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        workdir = req.get("workdir")
        if workdir is not None:
            if not os.path.isdir(workdir):
                cell.finish(-1, "failed", f"no such working directory: {workdir}")
                return
            cwd = workdir
        elif not os.path.isdir(cwd):
            cell.emit({"event": "notice", "message": f"{cwd} is gone; the cell starts in /"})
            cwd = "/"
        env["PWD"] = cwd
        spare = None
        if not overlay and workdir is None:
            spare = self._take_spare(generation, cwd, code_path, state)
        if spare is not None:
            proc, child = spare.proc, spare.child
        else:
            proc = start_shell(
                self.state.shell,
                [
                    shell_wrapper(self.state.writer, self.state.name),
                    self.state.name,
                    code_path,
                    state,
                ],
                subprocess.DEVNULL,
                cwd,
                env,
            )
            child = Child(self.reaper, proc)
        cell.pid = child.pid
        cell.emit({"event": "started", "pid": child.pid})
        if cell.reason is not None:
            killpg_quietly(child.pid, signal.SIGKILL)
        self._pump(cell, proc, child)
        rc = child.wait()
        cell.ran.set()
        settle(cell)  # a stopped cell ends once nothing of it is left
        self.state.leave(state, overlay, lambda: cell.finish(rc))
        try:
            os.unlink(code_path)
        except OSError:
            pass
        # a moment later: the exit is on its way back through agent, server and kernel
        # then, and a fork now would take a core from them (2-core hosts)
        time.sleep(SPARE_DELAY)
        self.spare_shell()

    def _pump(self, cell, proc: subprocess.Popen, child: Child) -> None:
        """The cell's output until its pipes close, or PIPE_GRACE after its shell exited."""
        ended = []

        def should_stop():
            if child.alive:
                return False
            if not ended:
                ended.append(time.monotonic())
            return time.monotonic() - ended[0] > PIPE_GRACE

        try:
            pump(
                {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"},
                cell.emit_output,
                should_stop,
            )
        finally:
            proc.stdout.close()
            proc.stderr.close()

    # -- spare shells ----------------------------------------------------------------------
    def spare_shell(self) -> None:
        """Have a spare shell with the current carried state ready (after a shell cell)."""
        with self.spare_lock:
            if self.stopping.is_set():
                return
            env, cwd, generation = self.state.current()
            spare = self.spare
            if spare is not None:
                if spare.generation == generation and spare.child.alive:
                    return
                self.spare = None
                spare.discard()
            if not os.path.isdir(cwd) or "\n" in self.work:
                return
            env["PWD"] = cwd
            try:
                proc = start_shell(
                    self.state.shell,
                    [spare_wrapper(self.state.writer, self.state.name), self.state.name],
                    subprocess.PIPE,
                    cwd,
                    env,
                )
            except OSError:
                return  # (a pids limit, say): the next cell starts its shell itself
            self.spare = Spare(proc, Child(self.reaper, proc), generation, cwd)

    def _take_spare(self, generation: int, cwd: str, code_path: str, state: str):
        """The spare shell, handed its cell, when it has this state; else None."""
        with self.spare_lock:
            spare, self.spare = self.spare, None
        if spare is None:
            return None
        if spare.generation != generation or spare.cwd != cwd or not spare.child.alive:
            spare.discard()
            return None
        try:
            spare.proc.stdin.write(
                (code_path + "\n" + state + "\n").encode("utf-8", "surrogateescape")
            )
            spare.proc.stdin.close()
        except OSError:
            spare.discard()
            return None
        return spare
