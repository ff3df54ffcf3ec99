"""Cells and their spools: every event of a cell is appended to its spool file, then sent to
each live subscriber; ``attach`` replays a spool from an offset, ``forget`` drops one.

A spool file is created with ``O_EXCL`` and forgotten ids are kept in ``spool/.forgotten``:
an id runs at most once on a runner (docs/runner.md, "Never twice").
"""

from __future__ import annotations

import os
import socket
import threading

try:
    from .carried import records
    from .wire import Refused, close_quietly, encode, send_file, send_parts
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    from carried import records
    from wire import Refused, close_quietly, encode, send_file, send_parts


class Cell:
    """One cell: its spool file, its live subscribers, its stop reason.

    ``engine`` runs it (the shell or the Python worker) and takes its signals."""

    def __init__(self, table: Cells, cid: str, kind: str, engine):
        self.table = table
        self.id = cid
        self.kind = kind
        self.engine = engine
        self.path = table.spool_path(cid)
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
        self.ran = threading.Event()  # its shell has exited, or its Python code has ended
        self.sweep_at = None  # when a stop's grace ends (monotonic): what is left is killed
        self.swept = threading.Event()  # that hard kill is done
        self.sweep_lock = threading.Lock()
        self.since = (0, None)  # when it started (procs.mark)
        self.child = None  # the Python worker that ran it (a Child), for procs.of_python
        self.outcome = None  # (returncode, status, message) of a Python cell's code

    def emit(self, event: dict) -> None:
        """Append the event to the spool file, then send it to every live subscriber."""
        ending = event.get("event") == "exit"
        if ending:
            self.ran.set()
            self.table.ended(self)  # not "running" once anyone can see its exit
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


class Cells:
    """The running cells by id, the spool directory and the ids forgotten there."""

    def __init__(self, spool: str):
        self.spool = spool
        self.forgotten_path = os.path.join(spool, ".forgotten")
        self.forgotten = set()
        self.running = {}
        self.lock = threading.Lock()

    def spool_path(self, cid: str) -> str:
        return os.path.join(self.spool, cid + ".ndjson")

    def prepare(self) -> None:
        """Read the forgotten ids; end the spools an earlier runner left unfinished."""
        try:
            with open(self.forgotten_path, encoding="utf-8") as f:
                self.forgotten = {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            pass
        for name in os.listdir(self.spool):
            if name.endswith(".ndjson"):
                close_orphan_spool(os.path.join(self.spool, name))

    def start(self, cid: str, kind: str, engine) -> Cell:
        """A new cell, its spool created; ``duplicate`` for an id seen here before."""
        if cid in self.forgotten:
            raise Refused("duplicate", f"execution {cid} ran here already (forgotten)")
        with self.lock:
            if cid in self.running:
                raise Refused("duplicate", f"execution {cid} is running")
            cell = Cell(self, cid, kind, engine)
            self.running[cid] = cell
        return cell

    def get(self, cid: str) -> Cell | None:
        with self.lock:
            return self.running.get(cid)

    def ended(self, cell: Cell) -> None:
        with self.lock:
            self.running.pop(cell.id, None)

    def now_running(self) -> list:
        with self.lock:
            return list(self.running.values())

    def known_not_running(self, cid: str) -> Refused:
        """Why a cell that is not running cannot be signalled."""
        if os.path.exists(self.spool_path(cid)):
            return Refused("not_running", f"execution {cid} has ended")
        return Refused("unknown_id", f"no execution {cid} on this runner")

    def attach(self, conn: socket.socket, cid: str, offset: int) -> bool:
        """The spool from ``offset``, then, while the cell runs, its live events: True when
        the connection now belongs to the cell's subscribers."""
        cell = self.get(cid)
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

    def forget(self, cid: str) -> dict:
        """Drop an ended cell's spool; its id stays refused for good."""
        with self.lock:
            if cid in self.running:
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


def close_orphan_spool(path: str) -> None:
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
