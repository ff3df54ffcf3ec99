"""The runner: the main process of a session container, serving cells over a unix socket.

Stdlib only, Python 3.8 or newer (it runs with the image's own ``python3``). The protocol is
written down in docs/runner.md. Threads: the main thread accepts connections; each connection
gets a thread (for a ``run`` it is the cell's driver); one reaper thread collects every child
status (the runner is PID 1 in its container, so orphans are ours to reap); the Python worker,
when there is one, has one pump thread reading its stdout, stderr and control pipes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

try:
    from jupyter_remote.protocol import records
except ImportError:  # in a container: the protocol's stdlib-only modules are mounted beside us
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "protocol"))
    import records


def files_module():
    """The file operations (files.py), imported at the first transfer: tarfile and shutil
    would add ~1 MiB to every idle runner."""
    try:
        from . import files
    except ImportError:
        import files
    return files


VERSION = "2"  # 2: files (stat, put, get, rename, remove)
HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "pyworker.py")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_REQUEST = 64 << 20  # one JSON line; a 16 MB cell escaped as JSON fits
MAX_FORGET = 1000  # ids one run request may ask to forget
CHUNK = 1 << 20  # an output pipe's size and the most one read (one event) takes
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # in fcntl from Python 3.10
SEND_TIMEOUT = 60.0  # a subscriber that takes no bytes for this long is dropped (it can attach)
DEFAULT_GRACE = 2.0  # seconds between the soft and the hard stop of a timed-out cell
PIPE_GRACE = 0.5  # how long pipes held open by a finished shell cell's background jobs are read
STOP_GRACE = 0.5  # on SIGTERM, between TERM and KILL of the cells' process groups
SETTLE_WAIT = 5.0  # most seconds a cell waits for the state an ended shell cell leaves
SPARE_DELAY = 0.004  # after a shell cell's exit, before its successor's shell is started
FILE_OPS = ("stat", "put", "get", "rename", "remove")
CANCEL_SIGNALS = ("SIGINT", "SIGTERM", "SIGKILL", "SIGHUP", "SIGQUIT")

# The shell wrapper: the cell is sourced by sh from a file (no argv size limit); on EXIT the
# working directory and the exported environment go to state files the runner reads afterwards.
# The environment is written by the builtin `export -p` where the runner can read its output
# back exactly (dash, busybox ash: checked once at start, see Runner.prepare), else by `env`:
# a fork and exec of `env` was ~1-3 ms of every shell cell.
STATE_BY_ENV = 'env -0 >"$__jr_s.env0" || env >"$__jr_s.env"'
STATE_BY_EXPORT = 'export -p >"$__jr_s.exp"'


def shell_trap(state: str) -> str:
    return (
        'trap \'__jr_rc=$?; { pwd >"$__jr_s.cwd"; '
        + state
        + "; } 2>/dev/null; exit $__jr_rc' EXIT; "
    )


def shell_wrapper(state: str) -> str:
    return "__jr_c=$1; __jr_s=$2; shift 2; " + shell_trap(state) + '. "$__jr_c"'


# The same, for a shell started ahead of its cell (see Runner.spare_shell): it waits for the
# cell file's and the state files' paths on stdin, a pipe; the cell itself gets /dev/null.
# A closed pipe (a spare no longer wanted) ends it at once, doing nothing.
def spare_wrapper(state: str) -> str:
    return (
        "IFS= read -r __jr_c && IFS= read -r __jr_s || exit 0; exec </dev/null; "
        + shell_trap(state)
        + '. "$__jr_c"'
    )


def returncode_of(status: int) -> int:
    """A wait status as a shell would report it: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


def signal_number(name) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        return int(signal.Signals(name))
    text = str(name).upper()
    if not text.startswith("SIG"):
        text = "SIG" + text
    return int(getattr(signal.Signals, text))


def encode(event: dict) -> bytes:
    """One plain event line (output goes as sized records: see records.py)."""
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode(
        "utf-8", "replace"
    )


def incomplete_tail(data: bytes) -> int:
    """How many trailing bytes of ``data`` begin a UTF-8 character not ended yet (0-3):
    they wait for the next read, so an output record never splits a character."""
    if not data or data[-1] < 0x80:
        return 0
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte >= 0xC0:  # a lead byte: how long its character is
            return back if (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4) > back else 0
        if byte < 0x80:
            return 0
    return 0


def send_parts(send, parts) -> None:
    """Every byte of ``parts`` through ``send(buffers) -> bytes taken`` (writev, sendmsg):
    an output record goes out as its head and its data, never copied into one."""
    views = [memoryview(p) for p in parts if p]
    while views:
        taken = send(views)
        while views and taken >= len(views[0]):
            taken -= len(views[0])
            views.pop(0)
        if taken:
            views[0] = views[0][taken:]


class Refused(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


class Reaper:
    """Collects every child's wait status (``waitpid(-1)``) and hands it to whoever waits."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiters = {}
        self._early = {}  # pid -> (status, time): reaped before anyone asked (or an orphan)
        self._kick = threading.Event()
        threading.Thread(target=self._loop, name="reaper", daemon=True).start()

    def watch(self, pid: int, callback) -> None:
        with self._lock:
            early = self._early.pop(pid, None)
            if early is None:
                self._waiters[pid] = callback
        self._kick.set()
        if early is not None:
            callback(early[0])

    def _loop(self):
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self._kick.wait(1.0)
                self._kick.clear()
                continue
            except InterruptedError:
                continue
            with self._lock:
                callback = self._waiters.pop(pid, None)
                if callback is None:
                    now = time.monotonic()
                    self._early[pid] = (status, now)
                    for old in [p for p, (_, t) in self._early.items() if now - t > 60]:
                        del self._early[old]
            if callback is not None:
                try:
                    callback(status)
                except Exception:  # noqa: BLE001 - the reaper must never die
                    pass


class Child:
    """A process started by the runner; ``wait()`` returns its returncode (from the reaper)."""

    def __init__(self, reaper: Reaper, proc: subprocess.Popen):
        self.proc = proc
        self.pid = proc.pid
        self.returncode = None
        self._done = threading.Event()
        reaper.watch(proc.pid, self._reaped)

    def _reaped(self, status: int) -> None:
        self.returncode = returncode_of(status)
        self.proc.returncode = self.returncode  # so Popen never waits for it itself
        self._done.set()

    def wait(self, timeout=None):
        self._done.wait(timeout)
        return self.returncode

    @property
    def alive(self) -> bool:
        return not self._done.is_set()


class Cell:
    """One cell: its spool file, its live subscribers, its stop reason."""

    def __init__(self, runner: Runner, cid: str, kind: str):
        self.runner = runner
        self.id = cid
        self.kind = kind
        self.path = runner.spool_path(cid)
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError:
            raise Refused("duplicate", f"execution {cid} is known to this runner") from None
        self.lock = threading.Lock()
        self.subscribers = []
        self.size = 0
        self.closed = False
        self.done = threading.Event()
        self.pid = None
        self.reason = None  # "cancelled" or "timed_out" once a stop was asked for
        self.timers = []

    def emit(self, event: dict) -> None:
        """Append the event to the spool file, then send it to every live subscriber."""
        ending = event.get("event") == "exit"
        if ending:
            self.runner.cell_ended(self)  # not "running" once anyone can see its exit
        self._append((encode(event),), ending)
        if ending:
            for timer in self.timers:
                timer.cancel()
            self.done.set()

    def emit_output(self, kind: str, data: bytes) -> None:
        """Output as one sized record (records.py): its bytes as they came, not escaped."""
        if data:
            self._append((records.output_head(kind, len(data)), data, b"\n"), False)

    def _append(self, parts: tuple, ending: bool) -> None:
        with self.lock:
            if self.closed:
                return
            send_parts(lambda views: os.writev(self.fd, views), parts)
            self.size += sum(len(p) for p in parts)
            for sock in list(self.subscribers):
                try:
                    send_parts(sock.sendmsg, parts)
                except OSError:
                    self.subscribers.remove(sock)
                    close_quietly(sock)
            if ending:
                self.closed = True
                os.close(self.fd)
                for sock in self.subscribers:
                    close_quietly(sock)
                self.subscribers = []

    def subscribe(self, sock: socket.socket, offset: int) -> None:
        """Send the spool from ``offset``, then every live event (no gap, no repeat)."""
        with self.lock:
            if offset > self.size:
                raise Refused("bad_offset", f"offset {offset} is past the spool's {self.size}")
            send_file(sock, self.path, offset, self.size)
            if self.closed:
                close_quietly(sock)
            else:
                self.subscribers.append(sock)

    def finish(self, returncode: int, status: str | None = None, message=None) -> None:
        if status is None:
            if self.reason == "timed_out":
                status = "timed_out"
            elif self.reason == "cancelled" and returncode != 0:
                status = "cancelled"
            else:
                status = "completed" if returncode == 0 else "failed"
        self.emit({"event": "exit", "returncode": returncode, "status": status, "message": message})

    def later(self, seconds: float, action) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()


def close_quietly(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


def send_file(sock: socket.socket, path: str, start: int, end: int) -> None:
    if end <= start:
        return
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            data = f.read(min(left, 1 << 20))
            if not data:
                break
            sock.sendall(data)
            left -= len(data)


def widen_pipe(fd: int) -> None:
    """Make an output pipe hold CHUNK bytes (64 KiB by default): a fast writer then fills
    1 MiB events, not 64 KiB ones, so a flood costs 16x fewer events on every hop. Best
    effort: a user over the kernel's pipe-user-pages limit keeps the default."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass


def pump(sources: dict, on_data, should_stop=None, on_line=None, drain_first=()) -> None:
    """Read pipes as data comes (no line buffering) until every one is at EOF.

    ``sources`` maps fd -> name; data goes to ``on_data(name, data)`` as bytes cut at UTF-8
    character boundaries. An fd named ``"control"`` carries JSON lines for ``on_line(obj)``;
    before each such line the fds in ``drain_first`` are read dry so output written before it
    is emitted before it. ``should_stop()`` ends the loop early (checked every 0.1 s).
    """
    sel = selectors.DefaultSelector()
    held = {}  # fd -> the start of a character a read cut
    pending = b""
    for fd, name in sources.items():
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
        if name != "control":
            held[fd] = b""
            widen_pipe(fd)
    open_fds = set(sources)

    def read(fd):
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            open_fds.discard(fd)
            sel.unregister(fd)
            if held.get(fd):
                on_data(sources[fd], held[fd])  # a torn character at the end: as it is
                held[fd] = b""
        return data

    def deliver(fd, chunk):
        if held[fd]:
            chunk = held[fd] + chunk
        cut = incomplete_tail(chunk)
        if cut:
            held[fd], chunk = chunk[-cut:], chunk[:-cut]
        else:
            held[fd] = b""
        if chunk:
            on_data(sources[fd], chunk)

    try:
        while open_fds:
            if should_stop is not None and should_stop():
                break
            for key, _ in sel.select(0.1):
                fd = key.fd
                if fd not in open_fds:
                    continue
                if key.data == "control":
                    data = read(fd)
                    if data is None:
                        continue
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        for other in drain_first:
                            while other in open_fds:
                                chunk = read(other)
                                if not chunk:
                                    break
                                deliver(other, chunk)
                        on_line(json.loads(line))
                    continue
                while fd in open_fds:
                    chunk = read(fd)
                    if not chunk:
                        break
                    deliver(fd, chunk)
                    if len(chunk) < CHUNK:
                        break
    finally:
        sel.close()


class ShellState:
    def __init__(self):
        self.cwd = os.getcwd()
        self.env = dict(os.environ)
        self.lock = threading.Lock()
        self.generation = 0  # bumped whenever cwd or env change: a spare shell is stale then
        # shell cells that have sent their exit event but not yet left their state here:
        # whoever reads the state waits for them (it is read after the exit, off its way)
        self.settling = 0
        self.settled = threading.Condition(self.lock)

    def current(self):
        """(env copy, cwd, generation), once every ended shell cell has left its state."""
        with self.lock:
            self.settled.wait_for(lambda: not self.settling, SETTLE_WAIT)
            return dict(self.env), self.cwd, self.generation


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


class PythonWorker:
    """The one persistent interpreter: a child process running pyworker.py."""

    def __init__(self, runner: Runner):
        self.runner = runner
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
            env, cwd, _ = self.runner.shell.current()
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
            self.child = Child(self.runner.reaper, proc)
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
                cell.finish(rc, cell.reason or "cancelled", "KeyboardInterrupt")
            else:
                cell.finish(rc)

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
                cell.finish(rc, cell.reason or "cancelled", "the Python interpreter was killed")
            if not self.runner.stopping:
                self.ensure()  # restarted at once, as promised in the kill notice
            return
        self.lost = (
            f"the Python interpreter exited (code {rc}); its state was lost — a new one was started"
        )
        if cell is not None:
            cell.finish(
                rc if rc else 1, None, f"the Python interpreter exited (code {rc}) in this cell"
            )

    def run(self, cell: Cell, req: dict) -> None:
        with self.cell_lock:
            if cell.reason is not None:
                cell.finish(130, cell.reason, "stopped before it started")
                return
            self.ensure()
            child = self.child
            cell.pid = child.pid
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
            }
            data = (json.dumps(message) + "\n").encode("utf-8", "surrogatepass")
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.cmd_fd, view) :]
            except (OSError, TypeError):
                pass  # the worker died; its pump thread ends the cell
            cell.done.wait()

    def interrupt(self, cell: Cell, signum: int) -> None:
        if self.current is not cell or not self.alive:
            return
        if signum == signal.SIGKILL:
            self.kill(cell, "the Python interpreter was killed (SIGKILL)")
        elif signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(self.child.pid, signal.SIGINT)
        else:
            os.kill(self.child.pid, signum)

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


def killpg_quietly(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Runner:
    def __init__(self, socket_path: str, spool: str):
        self.socket_path = socket_path
        self.spool = spool
        self.work = os.path.join(spool, ".work")
        self.forgotten_path = os.path.join(spool, ".forgotten")
        self.reaper = Reaper()
        self.shell = ShellState()
        self.python = PythonWorker(self)
        self.cells = {}
        self.cells_lock = threading.Lock()
        self.shell_children = {}
        self.spare = None  # a Spare shell for the next shell cell, or None
        self.spare_lock = threading.Lock()
        self.stopping = False
        self.forgotten = set()
        self.shell_state = STATE_BY_ENV  # how a shell cell writes its environment (prepare)

    # -- spool -------------------------------------------------------------------------
    def spool_path(self, cid: str) -> str:
        return os.path.join(self.spool, cid + ".ndjson")

    def prepare(self) -> None:
        os.makedirs(self.work, exist_ok=True)
        if export_p_reads_back(self.reaper):
            self.shell_state = STATE_BY_EXPORT
        for name in os.listdir(self.work):
            try:
                os.unlink(os.path.join(self.work, name))
            except OSError:
                pass
        try:
            with open(self.forgotten_path, encoding="utf-8") as f:
                self.forgotten = {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            pass
        for name in os.listdir(self.spool):
            if name.endswith(".ndjson"):
                self._close_orphan_spool(os.path.join(self.spool, name))

    def _close_orphan_spool(self, path: str) -> None:
        """A spool left unfinished by an earlier runner gets the exit event it never had
        (after its last whole record: a torn one is cut)."""
        try:
            with open(path, "rb+") as f:
                whole, last = records.scan_file(f)
                if last is not None and last.startswith(b'{"event":"exit"'):
                    return
                f.truncate(whole)
                f.seek(whole)
                f.write(
                    encode(
                        {
                            "event": "exit",
                            "returncode": -1,
                            "status": "lost",
                            "message": "the runner restarted while this cell ran",
                        }
                    )
                )
        except (OSError, records.BadRecord):
            pass

    def cell_ended(self, cell: Cell) -> None:
        with self.cells_lock:
            self.cells.pop(cell.id, None)

    # -- serving -----------------------------------------------------------------------
    def serve(self) -> int:
        self.prepare()
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
        self.stopping = True
        self.python.killed_by_us = True
        with self.spare_lock:
            spare, self.spare = self.spare, None
        if spare is not None:
            spare.discard()
        close_quietly(self.listener)
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        with self.cells_lock:
            cells = list(self.cells.values())
        for cell in cells:
            cell.reason = "cancelled"
        groups = [c.pid for c in cells if c.kind == "shell" and c.pid]
        if self.python.child is not None and self.python.alive:
            groups.append(self.python.child.pid)
        for pgid in groups:
            killpg_quietly(pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for cell in cells:
            cell.done.wait(max(0.0, deadline - time.monotonic()))
        for pgid in groups:
            killpg_quietly(pgid, signal.SIGKILL)
        for cell in cells:
            cell.emit(
                {
                    "event": "exit",
                    "returncode": 128 + signal.SIGTERM,
                    "status": "cancelled",
                    "message": "the runner was stopped",
                }
            )

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
            files = files_module()
            try:
                return self.file_op(conn, files, op, req, rest)
            except files.FileRefused as exc:
                raise Refused(exc.reason, exc.message) from None
        if op == "run":
            return self.op_run(conn, req)
        if op == "attach":
            cid = check_id(req.get("id"))
            offset = req.get("offset") or 0
            if not isinstance(offset, int) or offset < 0:
                raise Refused("bad_request", "offset must be a non-negative integer")
            with self.cells_lock:
                cell = self.cells.get(cid)
            if cell is not None:
                cell.subscribe(conn, offset)
                return True
            path = self.spool_path(cid)
            try:
                size = os.path.getsize(path)
            except OSError:
                raise Refused("unknown_id", f"no execution {cid} on this runner") from None
            if offset > size:
                raise Refused("bad_offset", f"offset {offset} is past the spool's {size}")
            send_file(conn, path, offset, size)
            return False
        if op == "signal":
            answer = self.op_signal(req)
        elif op == "status":
            answer = self.status()
        elif op == "forget":
            answer = self.op_forget(req)
        else:
            raise Refused("bad_request", f"unknown op {op!r}")
        conn.sendall(encode(answer))
        return False

    def file_op(self, conn: socket.socket, files, op: str, req: dict, rest: bytes) -> bool:
        """stat, put, get, rename, remove (docs/runner.md, "Files")."""
        if op == "get":
            path = container_path(req.get("path"))
            if not files.stat_path(path)["exists"]:
                raise Refused("path_not_found", f"no such path in the container: {path}")
            conn.sendall(encode({"ok": True}))
            files.send_tar(conn, path)
            return False
        if op == "put":
            into = container_path(req.get("into"))
            answer = files.put_members(files.SocketReader(conn, rest), into)
        elif op == "stat":
            answer = files.stat_path(container_path(req.get("path")))
        elif op == "rename":
            answer = files.rename(container_path(req.get("src")), container_path(req.get("dst")))
        else:
            answer = files.remove(container_path(req.get("path")))
        conn.sendall(encode(answer))
        return False

    def op_run(self, conn: socket.socket, req: dict) -> bool:
        cid = check_id(req.get("id"))
        kind = req.get("kind")
        if kind not in ("shell", "python"):
            raise Refused("bad_request", "kind must be 'shell' or 'python'")
        code = req.get("code")
        if not isinstance(code, str):
            raise Refused("bad_request", "code must be a string")
        env = req.get("env")
        if env is not None and (
            not isinstance(env, dict)
            or not all(
                isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in env.items()
            )
        ):
            raise Refused("bad_request", "env must map names to strings (or null to unset)")
        workdir = req.get("workdir")
        if workdir is not None and not isinstance(workdir, str):
            raise Refused("bad_request", "workdir must be a string")
        timeout = req.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise Refused("bad_request", "timeout must be a positive number of seconds")
        forget = req.get("forget") or []
        if not isinstance(forget, list) or len(forget) > MAX_FORGET:
            raise Refused("bad_request", f"forget must be a list of at most {MAX_FORGET} ids")
        forget = [check_id(fid) for fid in forget]
        if self.stopping:
            raise Refused("stopping", "the runner is stopping")
        if cid in self.forgotten:
            raise Refused("duplicate", f"execution {cid} ran here already (forgotten)")
        with self.cells_lock:
            if cid in self.cells:
                raise Refused("duplicate", f"execution {cid} is running")
            cell = Cell(self, cid, kind)
            self.cells[cid] = cell
        cell.subscribers.append(conn)
        if timeout is not None:
            cell.later(float(timeout), lambda: self.stop(cell, "timed_out", None, DEFAULT_GRACE))
        try:
            if kind == "shell":
                self.run_shell(cell, req)
            else:
                self.python.run(cell, req)
        except Exception as exc:  # noqa: BLE001 - the cell fails, the runner lives on
            cell.finish(-1, "failed", f"the runner could not run the cell: {exc!r}")
        for fid in forget:  # after the cell: off its way
            try:
                self.op_forget({"id": fid})
            except Refused:
                pass
        return True

    # -- shell cells -------------------------------------------------------------------
    def run_shell(self, cell: Cell, req: dict) -> None:
        base = os.path.join(self.work, cell.id)
        code_path, state = base + ".sh", base + ".state"
        with open(code_path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(req["code"])
            if req["code"] and not req["code"].endswith("\n"):
                f.write("\n")
        env, cwd, generation = self.shell.current()
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
            proc = subprocess.Popen(
                ["/bin/sh", "-c", shell_wrapper(self.shell_state), "sh", code_path, state],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
            child = Child(self.reaper, proc)
        cell.pid = child.pid
        cell.emit({"event": "started", "pid": child.pid})
        if cell.reason is not None:
            killpg_quietly(child.pid, signal.SIGKILL)
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
        rc = child.wait()
        with self.shell.lock:
            self.shell.settling += 1
        try:
            cell.finish(rc)  # first: the state files are read after the exit, off its way
            self._take_shell_state(state, overlay, env)
            for path in (code_path, *(state + end for end in (".cwd", ".exp", ".env0", ".env"))):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        finally:
            with self.shell.lock:
                self.shell.settling -= 1
                self.shell.settled.notify_all()
        # a moment later: the exit is on its way back through agent, server and kernel
        # then, and a fork now would take a core from them (2-core hosts)
        time.sleep(SPARE_DELAY)
        self.spare_shell()

    # -- spare shells ------------------------------------------------------------------
    # fork + exec of /bin/sh is most of a short shell cell's time in the runner. So, once
    # a shell cell has ended (its carried state is known), the next cell's shell is started
    # at once, with that state (own session and process group, cwd, exported env), and
    # waits for its cell on a pipe; a cell with the same carried state and no env/workdir
    # of its own takes it. Any other cell (or a stale spare) starts its shell as before.
    def spare_shell(self) -> None:
        """Have a spare shell with the current carried state ready (after a shell cell)."""
        with self.spare_lock:
            if self.stopping:
                return
            env, cwd, generation = self.shell.current()
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
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", spare_wrapper(self.shell_state), "sh"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
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

    def _take_shell_state(self, state: str, overlay: dict, started_env: dict) -> None:
        try:
            with open(state + ".cwd", "rb") as f:
                cwd = f.read().decode("utf-8", "surrogateescape").rstrip("\n")
        except OSError:
            return  # the cell did not get to its EXIT trap (killed, exec): keep the old state
        env = None
        for end, parse in ((".exp", parse_export_p), (".env0", parse_env0)):
            try:
                with open(state + end, "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            if raw:
                env = parse(raw)
                break
        if env is None and self.shell_state == STATE_BY_EXPORT:
            self.shell_state = STATE_BY_ENV  # output it could not read: `env` from now on
        if env is None:
            try:
                with open(state + ".env", "rb") as f:
                    env = parse_env_lines(f.read())
            except OSError:
                return
        for key in ("SHLVL", "_", "PWD"):
            env.pop(key, None)
        with self.shell.lock:
            # the request's env applies to its cell only, unless the cell changed it itself
            for key, value in overlay.items():
                if env.get(key) == value:
                    if key in self.shell.env:
                        env[key] = self.shell.env[key]
                    else:
                        env.pop(key, None)
                elif value is None and key not in env and key in self.shell.env:
                    env[key] = self.shell.env[key]
            if env != self.shell.env or (cwd and cwd != self.shell.cwd):
                self.shell.generation += 1  # a spare shell with the old state is stale
            self.shell.env = env
            if cwd:
                self.shell.cwd = cwd

    # -- signals, status, forget -------------------------------------------------------
    def stop(self, cell: Cell, reason: str, signum, grace) -> None:
        """Cancel or time out a cell: the soft signal now, the hard kill after ``grace``."""
        if cell.done.is_set():
            return
        if reason == "timed_out" or cell.reason is None:
            cell.reason = reason
        if signum is None:
            signum = signal.SIGTERM if cell.kind == "shell" else signal.SIGINT
        self.deliver(cell, signum)
        if grace is not None and signum != signal.SIGKILL:
            cell.later(float(grace), lambda: self.hard_kill(cell, grace))

    def deliver(self, cell: Cell, signum: int) -> None:
        if cell.kind == "shell":
            if cell.pid:
                killpg_quietly(cell.pid, signum)
        else:
            self.python.interrupt(cell, signum)

    def hard_kill(self, cell: Cell, grace) -> None:
        if cell.done.is_set():
            return
        if cell.kind == "shell":
            if cell.pid:
                killpg_quietly(cell.pid, signal.SIGKILL)
        else:
            self.python.kill(
                cell, f"the cell did not stop within {grace:g} s; the Python interpreter was killed"
            )

    def op_signal(self, req: dict) -> dict:
        cid = check_id(req.get("id"))
        try:
            signum = signal_number(req.get("signal", "SIGINT"))
        except (AttributeError, ValueError, TypeError):
            raise Refused("bad_request", f"unknown signal {req.get('signal')!r}") from None
        grace = req.get("grace")
        if grace is not None and (not isinstance(grace, (int, float)) or grace < 0):
            raise Refused("bad_request", "grace must be a non-negative number of seconds")
        with self.cells_lock:
            cell = self.cells.get(cid)
        if cell is None:
            if os.path.exists(self.spool_path(cid)):
                raise Refused("not_running", f"execution {cid} has ended")
            raise Refused("unknown_id", f"no execution {cid} on this runner")
        name = signal.Signals(signum).name
        if name in CANCEL_SIGNALS:
            self.stop(cell, "cancelled", signum, grace)
        else:
            self.deliver(cell, signum)
        return {"ok": True, "id": cid, "signal": name, "pid": cell.pid}

    def op_forget(self, req: dict) -> dict:
        cid = check_id(req.get("id"))
        with self.cells_lock:
            if cid in self.cells:
                raise Refused("running", f"execution {cid} is still running")
        try:
            os.unlink(self.spool_path(cid))
            existed = True
        except FileNotFoundError:
            existed = False
        if cid not in self.forgotten:
            self.forgotten.add(cid)
            with open(self.forgotten_path, "a", encoding="utf-8") as f:
                f.write(cid + "\n")
        return {"ok": True, "id": cid, "existed": existed}

    def status(self) -> dict:
        with self.cells_lock:
            running = sorted(self.cells)
        child = self.python.child
        alive = child is not None and child.alive
        return {
            "ok": True,
            "pid": os.getpid(),
            "rss_bytes": rss_bytes(),
            "running": running,
            "python": {"alive": alive, "pid": child.pid if alive else None},
            "cwd": self.shell.current()[1],
            "version": VERSION,
        }


def check_id(cid) -> str:
    if not isinstance(cid, str) or not ID_RE.match(cid):
        raise Refused("bad_request", "id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}")
    return cid


def container_path(raw) -> str:
    """An absolute path as the agent sends them (normalised there; checked again here)."""
    if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw or len(raw) > 4096:
        raise Refused("bad_request", "a path must be an absolute container path")
    return os.path.normpath(raw)


def read_request(conn: socket.socket) -> tuple[dict, bytes]:
    """The request line, and what was read past it (the start of an upload's members)."""
    buf, rest = bytearray(), b""
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        end = chunk.find(b"\n")
        if end >= 0:
            buf += chunk[:end]
            rest = chunk[end + 1 :]
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise Refused("too_large", f"a request is at most {MAX_REQUEST} bytes")
    try:
        req = json.loads(bytes(buf))
    except ValueError as exc:
        raise Refused("bad_request", f"the request is not one JSON line: {exc}") from None
    if not isinstance(req, dict):
        raise Refused("bad_request", "the request must be a JSON object")
    return req, rest


# dash and busybox ash write a value as quoted pieces: '...' (no quote inside) and "''"
# (a run of quotes), e.g. 'it'"'"'s' for it's and ''"''" for ''
EXPORT_ENTRY = re.compile(r"export ([A-Za-z_][A-Za-z0-9_]*)(=(?:'[^']*'|\"'+\")*)?\n")
EXPORT_PIECE = re.compile(r"'([^']*)'|\"('+)\"")


def parse_export_p(raw: bytes):
    """``export -p`` as dash and busybox ash write it; None for anything else."""
    text = raw.decode("utf-8", "surrogateescape")
    env, pos = {}, 0
    while pos < len(text):
        entry = EXPORT_ENTRY.match(text, pos)
        if entry is None:
            return None
        if entry.group(2) is not None:
            pieces = EXPORT_PIECE.findall(entry.group(2), 1)
            env[entry.group(1)] = "".join(quoted + quotes for quoted, quotes in pieces)
        pos = entry.end()
    return env


def export_p_reads_back(reaper: Reaper) -> bool:
    """Does this /bin/sh's ``export -p`` give back a tricky value exactly?"""
    value = "a'b\"c\\d$e`f\n g=h \u00e9''\n"
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", 'export __jr_t="$1"; export -p', "sh", value],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, ValueError):  # no /bin/sh; a value the locale cannot encode
        return False
    child = Child(reaper, proc)
    try:
        out = proc.stdout.read()
    finally:
        proc.stdout.close()
    if child.wait(5) != 0:
        return False
    env = parse_export_p(out)
    return env is not None and env.get("__jr_t") == value


def parse_env0(raw: bytes) -> dict:
    env = {}
    for item in raw.decode("utf-8", "surrogateescape").split("\0"):
        if "=" in item:
            key, value = item.split("=", 1)
            env[key] = value
    return env


ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def parse_env_lines(raw: bytes) -> dict:
    """``env`` output without ``-0``: a line not starting NAME= continues the last value."""
    env = {}
    key = None
    for line in raw.decode("utf-8", "surrogateescape").split("\n"):
        if ENV_LINE.match(line):
            key, value = line.split("=", 1)
            env[key] = value
        elif key is not None:
            env[key] += "\n" + line
    if key is not None and env[key].endswith("\n"):
        env[key] = env[key][:-1]
    return env


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
