"""The runner: the main process of a session container, serving cells over a unix socket.

Stdlib only, Python 3.8 or newer (it runs with the image's own ``python3``). The protocol is
written down in docs/runner.md. This module is the server: it accepts connections and
dispatches each request line to the module that does the job (cells.py: cells and their
spools; shell_cells.py and python_cells.py: running them; signals.py: stopping them;
file_ops.py: files). Threads: the main thread accepts connections; each connection gets a
thread (for a ``run`` it is the cell's driver); one reaper thread collects every child
status (the runner is PID 1 in its container, so orphans are ours to reap); the Python
worker, when there is one, has one pump thread reading its stdout, stderr and control pipes.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

try:
    from . import signals
    from .cells import Cells
    from .children import Reaper
    from .file_ops import FILE_OPS, file_op
    from .python_cells import PythonWorker
    from .shell_cells import Shell
    from .wire import Refused, check_id, check_run, close_quietly, encode, read_request
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    import signals
    from cells import Cells
    from children import Reaper
    from file_ops import FILE_OPS, file_op
    from python_cells import PythonWorker
    from shell_cells import Shell
    from wire import Refused, check_id, check_run, close_quietly, encode, read_request

VERSION = "2"  # 2: files (stat, put, get, rename, remove)
SEND_TIMEOUT = 60.0  # a subscriber that takes no bytes for this long is dropped (it can attach)


class Runner:
    def __init__(self, socket_path: str, spool: str):
        self.socket_path = socket_path
        self.stopping = threading.Event()
        self.reaper = Reaper()
        self.cells = Cells(spool)
        self.shell = Shell(self.reaper, os.path.join(spool, ".work"), self.stopping)
        self.python = PythonWorker(self.reaper, self.shell.state, self.stopping)
        self.listener = None

    def serve(self) -> int:
        self.shell.prepare()  # makes the spool directory too
        self.cells.prepare()
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        listener.listen(64)
        self.listener = listener
        try:
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
        except _Stop:
            pass
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        self.stopping.set()
        self.python.killed_by_us = True
        self.shell.close()
        close_quietly(self.listener)
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        signals.stop_all(self.cells.now_running(), self.python)

    def handle(self, conn: socket.socket) -> None:
        keep = False
        try:
            conn.settimeout(SEND_TIMEOUT)
            try:
                req, rest = read_request(conn)
                keep = self.dispatch(conn, req, rest)
            except Refused as exc:
                conn.sendall(
                    encode({"event": "error", "reason": exc.reason, "message": exc.message})
                )
        except Exception as exc:  # noqa: BLE001 - one bad connection never ends the runner
            try:
                conn.sendall(encode({"event": "error", "reason": "internal", "message": repr(exc)}))
            except OSError:
                pass
        finally:
            if not keep:
                close_quietly(conn)

    def dispatch(self, conn: socket.socket, req: dict, rest: bytes = b"") -> bool:
        """Serve one request; True when the connection now belongs to a cell's subscribers."""
        op = req.get("op")
        if op in FILE_OPS:
            file_op(conn, op, req, rest)
            return False
        if op == "run":
            return self.op_run(conn, req)
        if op == "attach":
            cid = check_id(req.get("id"))
            offset = req.get("offset") or 0
            if not isinstance(offset, int) or offset < 0:
                raise Refused("bad_request", "offset must be a non-negative integer")
            return self.cells.attach(conn, cid, offset)
        if op == "signal":
            answer = signals.op_signal(self.cells, req)
        elif op == "status":
            answer = self.status()
        elif op == "forget":
            answer = self.cells.forget(check_id(req.get("id")))
        else:
            raise Refused("bad_request", f"unknown op {op!r}")
        conn.sendall(encode(answer))
        return False

    def op_run(self, conn: socket.socket, req: dict) -> bool:
        """Run a cell; the connection gets its events (docs/runner.md, "run")."""
        cid = check_id(req.get("id"))
        forget = check_run(req)
        if self.stopping.is_set():
            raise Refused("stopping", "the runner is stopping")
        kind = req["kind"]
        engine = self.shell if kind == "shell" else self.python
        cell = self.cells.start(cid, kind, engine)
        cell.subscribers.append(conn)
        timeout = req.get("timeout")
        if timeout is not None:
            signals.time_out_after(cell, float(timeout))
        try:
            engine.run(cell, req)
        except Exception as exc:  # noqa: BLE001 - the cell fails, the runner lives on
            cell.finish(-1, "failed", f"the runner could not run the cell: {exc!r}")
        for fid in forget:  # after the cell: off its way
            try:
                self.cells.forget(fid)
            except Refused:
                pass
        return True

    def status(self) -> dict:
        running = sorted(cell.id for cell in self.cells.now_running())
        child = self.python.child
        alive = child is not None and child.alive
        return {
            "ok": True,
            "pid": os.getpid(),
            "rss_bytes": rss_bytes(),
            "running": running,
            "python": {"alive": alive, "pid": child.pid if alive else None},
            "cwd": self.shell.state.current()[1],
            "shell": self.shell.state.shell,
            "version": VERSION,
        }


def rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _Stop(BaseException):
    pass


def _on_stop_signal(signum, frame):
    raise _Stop()


def parse_args(argv) -> dict:
    opts = {"--socket": None, "--spool": None}
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name not in opts:
            raise SystemExit(f"usage: runner --socket PATH --spool DIR (unknown {arg!r})")
        opts[name] = value if eq else next(it, None)
    if not opts["--socket"] or not opts["--spool"]:
        raise SystemExit("usage: runner --socket PATH --spool DIR")
    return opts


def main(argv) -> int:
    opts = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_stop_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    runner = Runner(opts["--socket"], opts["--spool"])
    return runner.serve()
