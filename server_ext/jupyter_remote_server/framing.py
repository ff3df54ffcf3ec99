"""Whole NDJSON lines out of a byte stream, ending at the first exit event.

An agent's stream may break anywhere, even inside its last line. Forwarding only whole
lines means a client never sees half an event, and knowing whether the exit event was
read decides the end: the true one if it arrived, one made by the server if not.
"""

from __future__ import annotations

import json

EXIT_MARK = b'"event":"exit"'


class EventLines:
    """Feed chunks, get whole lines; `exit` is the stream's exit event once read."""

    def __init__(self) -> None:
        self._partial = b""
        self.exit: dict | None = None

    def feed(self, chunk: bytes) -> bytes:
        """The whole lines completed by `chunk` (nothing once the exit event was read)."""
        if self.exit is not None:
            return b""
        data = self._partial + chunk
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        lines = data[:end]
        if EXIT_MARK in lines:
            return self._cut_at_exit(lines)
        return lines

    def _cut_at_exit(self, lines: bytes) -> bytes:
        start = 0
        while start < len(lines):
            stop = lines.index(b"\n", start) + 1
            line = lines[start:stop]
            if EXIT_MARK in line:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict) and event.get("event") == "exit":
                    self.exit = event
                    self._partial = b""
                    return lines[:stop]
            start = stop
        return lines

    @property
    def partial(self) -> bytes:
        """Bytes of a line that never ended (dropped: half an event is no event)."""
        return self._partial
