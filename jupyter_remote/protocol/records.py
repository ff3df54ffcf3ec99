"""Event records: the format of a runner's spool, an agent's log and the streams between them.

Stdlib only (the runner's client imports it). A stream is a run of records, each either

- a plain event: one compact JSON line (``{"event":"exit",...}\\n``), or
- an output record: the line ``{"event":"stdout","size":N}\\n`` (or ``stderr``), then N bytes
  of output exactly as the command wrote them (UTF-8, cut at character boundaries), then
  ``\\n``.

Output is most of the bytes, and JSON-escaping it on one side and unescaping it on the other
was most of the CPU a flood of output cost; sized records move it as it came. Readers that
want NDJSON get it from ``to_ndjson`` (an output record becomes ``{"event":"stdout","data":
TEXT}``, invalid bytes replaced): the agent and the server answer NDJSON unless a client asks
for ``RECORDS_TYPE`` (docs/runner.md, "Records").
"""

from __future__ import annotations

import json

RECORDS_TYPE = "application/x-jupyter-remote-records"
_SIZED = (b'{"event":"stdout","size":', b'{"event":"stderr","size":')
_PREFIX = len(_SIZED[0])
_EXIT = b'{"event":"exit"'


class BadRecord(ValueError):
    """Bytes that are not a record where one should start."""


def output_head(kind: str, size: int) -> bytes:
    """The line before ``size`` bytes of ``kind`` ("stdout" or "stderr") output."""
    return b'{"event":"%s","size":%d}\n' % (kind.encode(), size)


def output_record(kind: str, data: bytes) -> bytes:
    return b"".join((output_head(kind, len(data)), data, b"\n"))


def _size(data: bytes, start: int, newline: int) -> int | None:
    """The payload size if the line data[start:newline] heads an output record, else None."""
    if data.startswith(_SIZED[0], start) or data.startswith(_SIZED[1], start):
        digits = data[start + _PREFIX : newline - 1]
        if not digits.isdigit() or data[newline - 1 : newline] != b"}":
            raise BadRecord(f"bad output record head: {bytes(data[start:newline])[:80]!r}")
        return int(digits)
    return None


def head_size(line: bytes) -> int | None:
    """The payload size if ``line`` (with its newline) heads an output record, else None."""
    return _size(line, 0, len(line) - 1)


def walk(data: bytes, start: int = 0):
    """(start, end, size) of each whole record in ``data`` from ``start``; ``size`` is None for
    a plain line. Stops at the first record that is not whole."""
    n = len(data)
    while start < n:
        newline = data.find(b"\n", start)
        if newline < 0:
            return
        size = _size(data, start, newline)
        end = newline + 1 if size is None else newline + size + 2
        if end > n:
            return
        if size is not None and data[end - 1] != 10:
            raise BadRecord(f"output record at {start} does not end where its head says")
        yield start, end, size
        start = end


def whole_length(data: bytes) -> int:
    """How many leading bytes of ``data`` are whole records (a torn tail is not)."""
    end = 0
    for _start, stop, _size in walk(data):
        end = stop
    return end


def event_of(data: bytes, start: int, end: int, size: int | None) -> dict:
    if size is None:
        return json.loads(data[start:end])
    kind = "stdout" if data[start + 10 : start + 16] == b"stdout" else "stderr"
    return {"event": kind, "data": data[end - size - 1 : end - 1].decode("utf-8", "replace")}


def events(data: bytes):
    """The events of the whole records in ``data``, as dicts (blank lines skipped)."""
    for start, end, size in walk(data):
        if size is None and end - start < 3 and not data[start:end].strip():
            continue
        yield event_of(data, start, end, size)


def plain_lines(data: bytes):
    """The plain JSON lines among the whole records of ``data`` (not output)."""
    for start, end, size in walk(data):
        if size is None:
            yield data[start:end]


def to_ndjson(data: bytes) -> bytes:
    """Whole records as NDJSON lines: output records become ``{"event","data"}`` lines."""
    out, copied = [], 0
    for start, end, size in walk(data):
        if size is not None:
            out.append(data[copied:start])
            event = event_of(data, start, end, size)
            out.append(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode())
            out.append(b"\n")
            copied = end
    if not copied:
        return data
    out.append(data[copied:])
    return b"".join(out)


class Splitter:
    """Feed a stream's chunks, get back only whole records, and stop at its exit event.

    Output moves on in the pieces it came in (a 1 MiB record cut in two is joined once,
    not re-copied with every chunk); only record heads and plain lines are looked at.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._have = 0  # bytes in _parts
        self._want: int | None = None  # length of the unfinished record, once its head is read
        self.exit_line: bytes | None = None

    @property
    def exit(self) -> dict | None:
        return None if self.exit_line is None else json.loads(self.exit_line)

    def rest(self) -> bytes:
        """The bytes of the record that has not ended."""
        return b"".join(self._parts)

    def feed(self, chunk: bytes) -> bytes:
        """The whole records ``chunk`` completes, up to and with the exit event (b"" after)."""
        if self.exit_line is not None or not chunk:
            return b""
        if self._parts:
            self._parts.append(chunk)
            self._have += len(chunk)
            if self._want is not None and self._have < self._want:
                return b""
            if self._want is None and b"\n" not in chunk:
                return b""
            data = b"".join(self._parts)
        else:
            data = bytes(chunk)
        self._parts, self._have, self._want = [], 0, None
        boundary = 0
        for start, boundary, size in walk(data):
            if size is None and data.startswith(_EXIT, start):
                self.exit_line = data[start:boundary]
                return data[:boundary] if boundary < len(data) else data
        if boundary == len(data):
            return data
        rest = data[boundary:]
        newline = rest.find(b"\n")
        if newline >= 0:  # the head of an output record whose bytes have not all come
            self._want = newline + head_size(rest[: newline + 1]) + 2
        self._parts, self._have = [rest], len(rest)
        return data[:boundary]


def scan(fh):
    """(length, the line if plain else None) of each whole record of an open binary file,
    from where it is; output is skipped with seek, only heads are read."""
    while True:
        line = fh.readline()
        if not line.endswith(b"\n"):
            return
        size = head_size(line)
        if size is None:
            yield len(line), line
            continue
        fh.seek(size, 1)
        if fh.read(1) != b"\n":
            return
        yield len(line) + size + 1, None


def starts_record(path: str, offset: int) -> bool:
    """Whether byte ``offset`` of the records file at ``path`` is where a record starts (or
    its end): a reader resuming anywhere else would read output as heads."""
    if offset == 0:
        return True
    at = 0
    with open(path, "rb") as fh:
        for length, _line in scan(fh):
            at += length
            if at >= offset:
                break
    return at == offset


def scan_file(fh) -> tuple[int, bytes | None]:
    """(bytes of the file that are whole records, the last record if it is a plain line)."""
    fh.seek(0)
    end, last = 0, None
    for length, line in scan(fh):
        end, last = end + length, line
    return end, last
