"""Reading a JSONL log that has bad lines: keep every state pyarrow reads, count the rest.

pyarrow's JSON reader fails a whole file for one bad line and does not say which line. So
the file is halved at line breaks until the halves read; a small part that still fails is
sorted line by line in Python: lines that surely fail (not UTF-8 JSON, not one object, a
column of the wrong type or past int64, a number no double holds, a lone surrogate) are
dropped and counted, and pyarrow reads the others (halving again if it still refuses some).
pyarrow judges every line kept, so a good line loads whether or not its file has bad ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pyarrow as pa

SMALL = 1 << 18  # bytes: a failing part this small is sorted line by line
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_BLANK = b" \t\r"


class _Unreadable(ValueError):
    pass


def _float(text: str) -> float:
    value = float(text)
    if value - value:  # a literal past a double: pyarrow refuses it, Python makes it inf
        raise _Unreadable(text)
    return value


_decoder = json.JSONDecoder(parse_float=_float)


def surely_bad(line: bytes, schema: pa.Schema) -> bool:
    """True when pyarrow cannot read this line as a row of `schema` (False when unsure)."""
    try:
        row = _decoder.decode(line.decode())
    except UnicodeDecodeError:  # pyarrow reads some of these (in fields it ignores)
        return False
    except RecursionError:  # too deep for Python, not for pyarrow
        return False
    except ValueError:
        return True
    if not isinstance(row, dict):
        return True
    for field in schema:
        value = row.get(field.name)
        if value is None:
            continue
        if pa.types.is_string(field.type):
            ok = type(value) is str
        elif pa.types.is_integer(field.type):
            ok = type(value) is int and INT64_MIN <= value <= INT64_MAX
        else:
            ok = type(value) in (int, float)
        if not ok:
            return True
    if b"\\u" in line:
        try:
            json.dumps(row, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate
            return True
    return False


def read_good_lines(
    data: bytes, read: Callable[[pa.Buffer], pa.Table], schema: pa.Schema
) -> tuple[list[pa.Table], int]:
    """The tables of every readable line of `data` (in order), and how many lines were bad.
    `read` parses a buffer of lines and raises pa.ArrowInvalid if any line is bad; `data`
    is known to fail as a whole."""
    buf = pa.py_buffer(data)
    tables: list[pa.Table] = []
    bad = 0

    def part(start: int, end: int, known_bad: bool = False) -> None:
        nonlocal bad
        if start >= end or (end - start <= SMALL and not data[start:end].strip(_BLANK + b"\n")):
            return
        if not known_bad:
            try:
                tables.append(read(buf.slice(start, end - start)))
                return
            except pa.ArrowInvalid:
                pass
        mid = data.find(b"\n", (start + end) // 2, end - 1)
        if end - start > SMALL and mid != -1:
            part(start, mid + 1)
            part(mid + 1, end)
            return
        lines = [ln for ln in data[start:end].split(b"\n") if ln.strip(_BLANK)]
        keep = [ln for ln in lines if not surely_bad(ln, schema)]
        bad += len(lines) - len(keep)
        halves(keep)

    def halves(lines: list[bytes]) -> None:
        nonlocal bad
        if not lines:
            return
        try:
            tables.append(read(pa.py_buffer(b"\n".join(lines))))
        except pa.ArrowInvalid:
            if len(lines) == 1:
                bad += 1
                return
            halves(lines[: len(lines) // 2])
            halves(lines[len(lines) // 2 :])

    part(0, len(data), known_bad=True)
    return tables, bad
