"""Open files: a higher limit at start, and a clear 503 when descriptors run out anyway.

Each streaming cell holds two descriptors (the kernel's request and the node's stream); at
the common soft limit of 1,024 a few hundred cells exhaust it. The soft limit is raised at
start (up to the hard limit). When it runs out anyway, tornado's accept loop fails with
EMFILE on every turn of the event loop, and logged a traceback each time (111,860 of them
in one measured run) while the waiting connections hung. `AcceptGuard` takes the listening
sockets' read events over: on EMFILE it frees a descriptor it keeps in reserve, accepts the
waiting connection, answers it a 503 with a JSON body that says why, and pauses accepting
briefly; it logs one warning per `WARN_EVERY` seconds with the count refused.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import time

import psutil
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream

from jupyter_remote.util.failures import OUT_OF_FILES

log = logging.getLogger("jupyter_remote")

PAUSE = 0.1  # seconds without accepting after a refusal: the loop does other work meanwhile
WARN_EVERY = 10.0
DRAIN_FOR = 1.0  # seconds a refused connection may take to send its request before closing
BATCH = 128  # connections accepted per read event, as tornado's own handler does


def raise_open_files_limit(want: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to `want` (0: the hard limit), never lower it.
    Returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want <= 0 else want
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


def refusal(who: str, soft: int, hint: str) -> bytes:
    """The 503 a connection gets when the process has no descriptor left for it."""
    body = json.dumps(
        {
            "message": f"{who} has run out of open files (limit {soft}); try again in a "
            f"moment, or raise {hint}",
            "reason": "too_many_open_files",
        }
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


class AcceptGuard:
    """Accepts for an HTTP server's listening sockets, shedding load on EMFILE."""

    def __init__(self, http_server, port: int, who: str, hint: str, logger=log) -> None:
        self.log = logger
        self.http_server = http_server
        self.port = port
        self.who, self.hint = who, hint  # the 503's words: whose limit, and how to raise it
        self.loop = IOLoop.current()
        self.sockets: list[socket.socket] = []
        self.reserve: int | None = None
        self.refused = 0
        self._warned_at = 0.0
        self._refused_since_warning = 0

    @classmethod
    def install_for(cls, serverapp) -> AcceptGuard | None:
        """The guard of a Jupyter server's plain-HTTP sockets (None under TLS, where
        accepted connections need a handshake first, or with no HTTP server of its own)."""
        try:
            http_server = serverapp.http_server
        except AttributeError:  # a test's server app: requests arrive without sockets
            return None
        if serverapp.certfile:
            return None
        guard = cls(
            http_server,
            serverapp.port,
            "the Jupyter server",
            "c.RemoteApp.open_files_limit",
            logging.getLogger("jupyter_remote_server"),
        )
        return guard if guard.install() else None

    def install(self) -> int:
        """Take over the read events of this process's sockets listening on `port`.
        Returns how many were taken (0 when none is found: nothing changes)."""
        self._open_reserve()
        for fd in self._listening_fds():
            sock = socket.socket(fileno=fd)  # tornado's own socket: detached, never closed here
            self.loop.remove_handler(fd)
            self.loop.add_handler(sock, self._on_readable, IOLoop.READ)
            self.sockets.append(sock)
        return len(self.sockets)

    def _listening_fds(self) -> list[int]:
        return [
            c.fd
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self.port
        ]

    def _open_reserve(self) -> None:
        if self.reserve is None:
            try:
                self.reserve = os.open(os.devnull, os.O_RDONLY)
            except OSError:
                self.reserve = None

    def _on_readable(self, sock: socket.socket, events: int) -> None:
        for _ in range(BATCH):
            try:
                conn, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_FILES:
                    raise
                self._shed(sock)
                return
            stream = IOStream(
                conn,
                max_buffer_size=self.http_server.max_buffer_size,
                read_chunk_size=self.http_server.read_chunk_size,
            )
            self.http_server.handle_stream(stream, address)

    def _shed(self, sock: socket.socket) -> None:
        """Answer one waiting connection a 503 with the reserve descriptor, then pause."""
        if self.reserve is not None:
            os.close(self.reserve)
            self.reserve = None
            try:
                conn, _ = sock.accept()
            except OSError:
                self._open_reserve()
            else:
                self._refuse(conn)
        self._warn()
        self.loop.remove_handler(sock)
        self.loop.call_later(PAUSE, self._resume, sock)

    def _refuse(self, conn: socket.socket) -> None:
        """Send the 503, then read the request to its end before closing (closing with
        unread bytes would reset the connection and lose the answer); the reserve comes
        back when this connection is closed."""
        self.refused += 1
        self._refused_since_warning += 1
        conn.setblocking(False)
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            conn.send(refusal(self.who, soft, self.hint))
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            return self._closed(conn)
        timer = self.loop.call_later(DRAIN_FOR, self._closed, conn)

        def drain(fd, events) -> None:
            try:
                while chunk := conn.recv(65536):
                    del chunk
            except BlockingIOError:
                return
            except OSError:
                pass
            self.loop.remove_timeout(timer)
            self._closed(conn)

        self.loop.add_handler(conn, drain, IOLoop.READ)

    def _closed(self, conn: socket.socket) -> None:
        if conn.fileno() != -1:
            try:
                self.loop.remove_handler(conn)
            except (KeyError, ValueError):
                pass
            conn.close()
        self._open_reserve()

    def _resume(self, sock: socket.socket) -> None:
        if sock in self.sockets:  # not closed meanwhile
            self.loop.add_handler(sock, self._on_readable, IOLoop.READ)

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self.log.warning(
                "jupyter-remote: %s is out of open files (limit %d): %d connection(s) refused "
                "with 503 too_many_open_files since the last such warning",
                self.who,
                soft,
                self._refused_since_warning,
            )
            self._warned_at, self._refused_since_warning = now, 0

    def close(self) -> None:
        for sock in self.sockets:
            try:
                self.loop.remove_handler(sock)
            except (KeyError, ValueError):
                pass
            sock.detach()
        self.sockets = []
        if self.reserve is not None:
            os.close(self.reserve)
            self.reserve = None
