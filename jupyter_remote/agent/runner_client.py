"""Host side of the runner protocol (docs/runner.md): ``RunnerClient(socket_path)``.

Stdlib only. One unix-socket connection per request; streams are iterators of event dicts
that close their socket when closed or exhausted. Nothing is ever re-sent: a request that
fails on the way raises, and the caller decides (for a ``run``, by ``attach``).
"""

from __future__ import annotations

import json
import socket
import time

from jupyter_remote.agent.runner_stream import (
    READ_BUFFER,
    EventStream,
    RunnerError,
    RunnerRefused,
    RunnerUnavailable,
)

__all__ = ["EventStream", "RunnerClient", "RunnerError", "RunnerRefused", "RunnerUnavailable"]


class RunnerClient:
    """One runner's operations (docs/runner.md), one connection per request."""

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
        execution_count: int | None = None,
    ) -> EventStream:
        """Start a cell; the events stream until its exit event (RunnerRefused on duplicate).
        ``forget``: ids of earlier cells to forget once this one has ended;
        ``execution_count``: the kernel's In[N], which a Python traceback names."""
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
        if execution_count is not None:
            request["execution_count"] = execution_count
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
