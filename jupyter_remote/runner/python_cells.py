"""Python cells: the one persistent interpreter (pyworker.py, a child process in its own
process group), started at the first Python cell, fed one cell at a time, interrupted,
killed and restarted; its output and control pipes read by one pump thread.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

try:
    from . import procs
    from .children import Child, Reaper, killpg_quietly
    from .pump import pump
    from .signals import settle
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    import procs
    from children import Child, Reaper, killpg_quietly
    from pump import pump
    from signals import settle

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyworker.py")


class PythonWorker:
    """The one persistent interpreter: a child process running pyworker.py."""

    soft_signal = signal.SIGINT  # a cancel or a timeout raises KeyboardInterrupt in the cell

    def __init__(self, reaper: Reaper, shell_state, stopping: threading.Event):
        self.reaper = reaper
        self.shell_state = shell_state  # where a new interpreter starts, with which env
        self.stopping = stopping
        self.cell_lock = threading.Lock()  # one Python cell at a time; others wait their turn
        self.spawn_lock = threading.Lock()
        self.child = None
        self.cmd_fd = None
        self.current = None
        self.lost = None  # the notice the next cell carries after the interpreter died
        self.killed_by_us = False

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.alive

    def ensure(self) -> None:
        with self.spawn_lock:
            if self.alive:
                return
            cmd_r, cmd_w = os.pipe()
            ctl_r, ctl_w = os.pipe()
            env, cwd, _ = self.shell_state.current()
            env.setdefault("MPLBACKEND", "module://_jupyter_remote_inline")
            env["PYTHONUNBUFFERED"] = "1"
            cwd = cwd if os.path.isdir(cwd) else "/"
            try:
                proc = subprocess.Popen(
                    [sys.executable or "python3", "-u", WORKER, str(cmd_r), str(ctl_w)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(cmd_r, ctl_w),
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            finally:
                os.close(cmd_r)
                os.close(ctl_w)
            self.child = Child(self.reaper, proc)
            self.cmd_fd = cmd_w
            self.killed_by_us = False
            sources = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
            sources[ctl_r] = "control"
            threading.Thread(
                target=self._pump, args=(self.child, sources, ctl_r), daemon=True
            ).start()

    def _on_data(self, name: str, data: bytes) -> None:
        cell = self.current
        if cell is not None:
            cell.emit_output(name, data)

    def _on_line(self, msg: dict) -> None:
        cell = self.current
        kind = msg.get("type")
        if cell is None:
            if kind == "display":
                self._ack()
            return
        if kind == "display":
            cell.emit(
                {"event": "display", "data": msg.get("data"), "metadata": msg.get("metadata") or {}}
            )
            self._ack()
        elif kind == "done":
            self.current = None
            status = msg.get("status")
            rc = int(msg.get("returncode", 0))
            if status == "interrupted":
                self._end(cell, rc, cell.reason or "cancelled", "KeyboardInterrupt")
            else:
                self._end(cell, rc)

    @staticmethod
    def _end(cell, rc: int, status=None, message=None) -> None:
        """The cell's code has ended: its exit now, or, for a stopped cell, once the
        processes it started have ended too (``run`` settles it)."""
        with cell.sweep_lock:
            if cell.outcome is None:
                cell.outcome = (rc, status, message)
            cell.ran.set()
            if cell.sweep_at is None:
                cell.finish(*cell.outcome)  # on this thread: no hand-over on a cell's path

    def _ack(self) -> None:
        """The worker waits after each display message: all it wrote before is read now."""
        try:
            os.write(self.cmd_fd, b"\n")
        except (OSError, TypeError):
            pass

    def _pump(self, child: Child, sources: dict, ctl_r: int) -> None:
        outs = tuple(fd for fd, name in sources.items() if name != "control")
        try:
            pump(sources, self._on_data, on_line=self._on_line, drain_first=outs)
        except Exception as exc:  # noqa: BLE001 - a garbled control line ends the worker
            self._on_data("stderr", f"[runner] the Python worker's pipe failed: {exc}\n".encode())
            killpg_quietly(child.pid, signal.SIGKILL)
        rc = child.wait()
        os.close(ctl_r)
        child.proc.stdout.close()
        child.proc.stderr.close()
        with self.spawn_lock:
            if self.cmd_fd is not None and self.child is child:
                try:
                    os.close(self.cmd_fd)
                except OSError:
                    pass
                self.cmd_fd = None
        killpg_quietly(child.pid, signal.SIGKILL)  # what the cell left running in its group
        cell, self.current = self.current, None
        if self.killed_by_us:
            self.lost = None
            if cell is not None:
                self._end(cell, rc, cell.reason or "cancelled", "the Python interpreter was killed")
            if not self.stopping.is_set():
                self.ensure()  # restarted at once, as promised in the kill notice
            return
        self.lost = (
            f"the Python interpreter exited (code {rc}); its state was lost — a new one was started"
        )
        if cell is not None:
            self._end(
                cell,
                rc if rc else 1,
                None,
                f"the Python interpreter exited (code {rc}) in this cell",
            )

    def run(self, cell, req: dict) -> None:
        with self.cell_lock:
            if cell.reason is not None:
                cell.finish(130, cell.reason, "stopped before it started")
                return
            self.ensure()
            child = self.child
            cell.pid, cell.child = child.pid, child
            cell.since = procs.mark()
            self.current = cell
            cell.emit({"event": "started", "pid": child.pid})
            if self.lost:
                cell.emit({"event": "notice", "message": self.lost})
                self.lost = None
            message = {
                "id": cell.id,
                "code": req["code"],
                "env": req.get("env"),
                "workdir": req.get("workdir"),
                "execution_count": req.get("execution_count"),
            }
            data = (json.dumps(message) + "\n").encode("utf-8", "surrogatepass")
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.cmd_fd, view) :]
            except (OSError, TypeError):
                pass  # the worker died; its pump thread ends the cell
            cell.ran.wait()
            settle(cell)  # a stopped cell ends once the processes it started have
            if cell.outcome is not None and not cell.done.is_set():
                cell.finish(*cell.outcome)

    def interrupt(self, cell, signum: int) -> None:
        """SIGINT and SIGTERM: a KeyboardInterrupt in the cell's code (the interpreter and
        its state live on) and the signal itself to each process the cell started."""
        if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            procs.send(self.processes(cell), signum)
        if self.current is not cell or not self.alive:
            return
        if signum == signal.SIGKILL:
            self.kill(cell, "the Python interpreter was killed (SIGKILL)")
        elif signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(self.child.pid, signal.SIGINT)
        else:
            os.kill(self.child.pid, signum)

    def processes(self, cell) -> dict:
        child = getattr(cell, "child", None)
        if child is None:
            return {}
        return procs.of_python(child.pid, cell.since, worker_gone=not child.alive)

    def sweep(self, cell) -> list:
        """SIGKILL to each process the cell started: the names of those that were left."""
        return procs.kill_all(lambda: self.processes(cell))

    def kill(self, cell, why: str) -> None:
        if cell is not None and self.current is not cell:
            return
        child = self.child
        if child is None or not child.alive:
            return
        self.killed_by_us = True
        if cell is not None:
            cell.emit(
                {
                    "event": "notice",
                    "message": f"{why}; its state was lost — a new one was started",
                }
            )
        killpg_quietly(child.pid, signal.SIGKILL)
