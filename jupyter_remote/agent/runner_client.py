"""Host side of the runner protocol (docs/runner.md): ``RunnerClient(socket_path)``.

Stdlib only. One unix-socket connection per request; streams are iterators of event dicts
that close their socket when closed or exhausted. Nothing is ever re-sent: a request that
fails on the way raises, and the caller decides (for a ``run``, by ``attach``).
"""

from __future__ import annotations

import json
import socket
import time

from jupyter_remote.protocol import records

READ_BUFFER = 1 << 20


class RunnerError(Exception):
    """Base of the client's errors."""


class RunnerUnavailable(RunnerError):
    """The runner's socket does not answer, or the connection broke mid-answer."""


class RunnerRefused(RunnerError):
    """The runner answered with an error event (``reason``: duplicate, unknown_id, ...)."""

    def __init__(self, reason: str, message: str, event: dict | None = None):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.event = event or {}


class EventStream:
    """Events of one execution, in spool order; ``offset`` is the spool byte offset reached.

    After a broken connection, ``attach(id, stream.offset)`` continues exactly where it
    stopped. ``exit`` is the final event once it has arrived.
    """

    def __init__(self, sock: socket.socket, execution_id: str, offset: int = 0):
        self._sock = sock
        # a large buffer: a flood of output comes as 1 MiB events, which an 8 KiB buffer
        # reads in 128 recv calls each
        self._file = sock.makefile("rb", buffering=READ_BUFFER)
        self.id = execution_id
        self.offset = offset
        self.exit: dict | None = None
        self._closed = False

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._closed or self.exit is not None:
            self.close()
            raise StopIteration
        head = self._line()
        size = records.head_size(head)
        if size is None:
            event = json.loads(head)
            self._account(head, event)
            return event
        data = self._read(self._file.read, size + 1)
        if len(data) < size + 1:
            self._read(lambda: b"")  # raises: the stream ended inside the record
        self.offset += len(head) + size + 1
        return records.event_of(head + data, 0, len(head) + size + 1, size)

    def blocks(self):
        """The events as runs of whole spool records (bytes), as much as one read brings,
        for copying output on without decoding it: a flood moves in 1 MiB pieces. The exit
        line is not in them (it is ``exit``); an error event is raised. Same offsets and end
        as iterating."""
        splitter = records.Splitter()
        while not self._closed and self.exit is None:
            block = splitter.feed(self._read(self._file.read1, READ_BUFFER))
            if block.startswith(b'{"event":"error"'):
                line = block[: block.index(b"\n") + 1]
                self._account(line, json.loads(line))  # raises
            if splitter.exit_line is not None:
                block = block[: len(block) - len(splitter.exit_line)]
                self.offset += len(block)
                self._account(splitter.exit_line, splitter.exit)
            else:
                self.offset += len(block)
            if block:
                yield block
        self.close()

    def _line(self) -> bytes:
        """The next whole line; RunnerUnavailable when the stream broke before its exit."""
        line = self._read(self._file.readline)
        if not line.endswith(b"\n"):
            self._read(lambda: b"")  # raises: the stream ended inside or before a line
        return line

    def _read(self, read, *args) -> bytes:
        """Some bytes of the stream; RunnerUnavailable when it broke or ended (no bytes)."""
        try:
            data = read(*args)
        except OSError as exc:
            self.close()
            raise RunnerUnavailable(
                f"connection to the runner broke at offset {self.offset}: {exc}"
            ) from exc
        if not data:
            self.close()
            raise RunnerUnavailable(
                f"the runner closed the stream of {self.id} before its exit event "
                f"(at offset {self.offset}); attach to continue"
            )
        return data

    def _account(self, line: bytes, event: dict) -> None:
        """Move the spool offset past `line`; an error event is raised, an exit kept."""
        if event.get("event") == "error":
            self.close()
            raise RunnerRefused(event.get("reason", "error"), event.get("message", ""), event)
        self.offset += len(line)
        if event.get("event") == "exit":
            self.exit = event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            for thing in (self._file, self._sock):
                try:
                    thing.close()
                except OSError:
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class RunnerClient:
    def __init__(self, socket_path: str, connect_timeout: float = 5.0):
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout

    def _connect(self, request: dict, read_timeout: float | None) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise RunnerUnavailable(f"no runner at {self.socket_path}: {exc}") from exc
        try:
            sock.sendall(json.dumps(request, separators=(",", ":")).encode("utf-8") + b"\n")
        except OSError as exc:
            sock.close()
            raise RunnerUnavailable(f"the runner at {self.socket_path} broke: {exc}") from exc
        sock.settimeout(read_timeout)
        return sock

    def _one(self, request: dict, timeout: float = 30.0) -> dict:
        sock = self._connect(request, timeout)
        try:
            with sock.makefile("rb") as f:
                line = f.readline()
        except OSError as exc:
            raise RunnerUnavailable(f"the runner at {self.socket_path} broke: {exc}") from exc
        finally:
            sock.close()
        return self._answer(line, "gave no answer")

    def _answer(self, line: bytes, why_none) -> dict:
        """The runner's one-line answer; its error event raised as RunnerRefused."""
        if not line.endswith(b"\n"):
            raise RunnerUnavailable(f"the runner at {self.socket_path} {why_none}")
        answer = json.loads(line)
        if answer.get("event") == "error":
            raise RunnerRefused(answer.get("reason", "error"), answer.get("message", ""), answer)
        return answer

    def run(
        self,
        execution_id: str,
        kind: str,
        code: str,
        env: dict | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        read_timeout: float | None = None,
        forget: list[str] | None = None,
    ) -> EventStream:
        """Start a cell; the events stream until its exit event (RunnerRefused on duplicate).
        ``forget``: ids of earlier cells to forget once this one has ended."""
        request = {
            "op": "run",
            "id": execution_id,
            "kind": kind,
            "code": code,
            "env": env,
            "workdir": workdir,
            "timeout": timeout,
        }
        if forget:
            request["forget"] = forget
        return EventStream(self._connect(request, read_timeout), execution_id)

    def attach(
        self, execution_id: str, offset: int = 0, read_timeout: float | None = None
    ) -> EventStream:
        """The spooled events from byte ``offset``, then the live ones until the exit event."""
        request = {"op": "attach", "id": execution_id, "offset": offset}
        return EventStream(self._connect(request, read_timeout), execution_id, offset)

    def signal(self, execution_id: str, sig: str = "SIGINT", grace: float | None = None) -> dict:
        return self._one({"op": "signal", "id": execution_id, "signal": sig, "grace": grace})

    def status(self, timeout: float = 30.0) -> dict:
        return self._one({"op": "status"}, timeout)

    def forget(self, execution_id: str) -> dict:
        return self._one({"op": "forget", "id": execution_id})

    def wait_ready(self, timeout: float = 10.0) -> dict:
        """Poll ``status`` until the runner answers; RunnerUnavailable after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.status(timeout=max(0.1, deadline - time.monotonic()))
            except RunnerUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    # -- files (issue 12): the runner reads and writes them itself, not dockerd ------------
    def stat(self, path: str) -> dict:
        """{"exists", "dir"} of a container path."""
        return self._one({"op": "stat", "path": path})

    def rename(self, src: str, dst: str) -> dict:
        return self._one({"op": "rename", "src": src, "dst": dst})

    def remove(self, path: str) -> dict:
        return self._one({"op": "remove", "path": path}, timeout=300.0)

    def put(self, into: str, pieces, timeout: float = 300.0) -> dict:
        """Send framed members (docs/runner.md, "Files") to be written under ``into``;
        the runner's answer: {"files", "size"}. Raises RunnerRefused with its reason."""
        sock = self._connect({"op": "put", "into": into}, timeout)
        try:
            try:
                for piece in pieces:
                    if piece:
                        sock.sendall(piece)
                sock.shutdown(socket.SHUT_WR)  # the end: a cut upload is told apart
            except OSError as exc:  # it stopped reading: its answer says why, if it can
                sent_error = exc
            except BaseException:
                # the upload was refused on our side (a bad member): end it and wait for
                # the runner's answer, so it has stopped writing before anyone cleans up
                _finish_quietly(sock)
                raise
            else:
                sent_error = None
            line = _answer_line(sock)
        finally:
            sock.close()
        return self._answer(line, f"broke: {sent_error or 'no answer'}")

    def get(self, path: str, timeout: float = 300.0):
        """A tar of ``path`` as 1 MiB chunks; RunnerRefused (path_not_found) before any.
        The stream is checked to end with the tar's two zero blocks (a runner that died
        mid-way is not a short archive)."""
        sock = self._connect({"op": "get", "path": path}, timeout)
        try:  # its answer line read byte by byte: the tar that follows stays on the socket
            line = b""
            while not line.endswith(b"\n") and len(line) < 65536 and (byte := sock.recv(1)):
                line += byte
            self._answer(line, "gave no answer")
        except (OSError, ValueError) as exc:
            sock.close()
            raise RunnerUnavailable(f"the runner at {self.socket_path} broke: {exc}") from exc
        except RunnerError:
            sock.close()
            raise
        return _tar_chunks(sock, path)


def _answer_line(sock: socket.socket) -> bytes:
    try:
        with sock.makefile("rb") as f:
            return f.readline()
    except OSError:
        return b""


def _finish_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    _answer_line(sock)


def _tar_chunks(sock: socket.socket, path: str):
    """The tar in 1 MiB chunks (a unix socket gives ~200 KiB a read; each hop after this
    costs per chunk)."""
    end = bytes(1024)
    tail = b""
    buf = bytearray(READ_BUFFER)
    view = memoryview(buf)
    try:
        while True:
            filled = 0
            while filled < READ_BUFFER:
                try:
                    got = sock.recv_into(view[filled:])
                except OSError as exc:
                    raise RunnerUnavailable(f"the runner's tar of {path} broke off: {exc}") from exc
                if not got:
                    break
                filled += got
            if not filled:
                break
            chunk = bytes(view[:filled])
            tail = (tail + chunk[-1024:])[-1024:]
            yield chunk
            if filled < READ_BUFFER:
                break
    finally:
        sock.close()
    if tail != end:
        raise RunnerUnavailable(f"the runner's tar of {path} ended before the tar did")
