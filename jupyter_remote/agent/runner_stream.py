"""Reading the runner's answers: the client's errors and one execution's event stream,
with the spool offset reached (so ``attach`` continues exactly there)."""

from __future__ import annotations

import json
import socket

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
