"""What an engine state is: the fields, their ranges, and the checks on each datagram.

The gateway logs a good datagram's bytes as they came, so "good" has to mean more than
"Python's json.loads took it": that accepts NaN/Infinity, numbers no double or int64 holds,
lone surrogates and repeated names (each of which breaks the log for pyarrow or for any
standard JSON reader), and it recurses once per nesting level (a RecursionError on deep
input). A cheap bracket count keeps deep input from the decoder; a plain state (just the
eight fields, no ':' inside strings) is decoded by the bare C decoder and its eight values
checked; anything else is decoded again with hooks that check every number and object.
"""

from __future__ import annotations

import json
import re

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# field -> accepted Python types after JSON decoding (bool is never a number here)
FIELDS: dict[str, tuple[type, ...]] = {
    "engine_id": (str,),
    "timestamp_ms": (int,),
    "latency_pred_ms": (int, float),
    "scheduling_mode": (str,),
    "pending_tokens_total": (int,),
    "kv_cache_free_blocks": (int,),
    "kv_cache_total_blocks": (int,),
    "engine_capacity": (int, float),
}
NUMBERS = tuple(name for name, kinds in FIELDS.items() if kinds != (str,))
MAX_DATAGRAM = 4096
MAX_STRING = 256
MAX_DEPTH = 32
BOM = b"\xef\xbb\xbf"

REASONS = (
    "too_large",
    "too_deep",
    "not_utf8",
    "not_json",
    "non_finite",
    "out_of_range",
    "duplicate_key",
    "bad_string",
    "not_object",
    "missing_field",
    "bad_type",
    "bad_value",
)


class BadState(ValueError):
    """A datagram that is not an engine state; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _constant(name: str):
    raise BadState("non_finite", f"{name} is not standard JSON")


def _float(text: str) -> float:
    value = float(text)
    if value - value != 0:  # inf - inf is nan
        raise BadState("non_finite", f"{text[:20]} does not fit a double")
    return value


def _int(text: str) -> int:
    value = int(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise BadState("out_of_range", f"{text[:20]}... does not fit int64")
    return value


def _object(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise BadState("duplicate_key", "a name appears twice in one object")
    return obj


_plain = json.JSONDecoder(parse_constant=_constant)
_strict = json.JSONDecoder(
    parse_constant=_constant, parse_float=_float, parse_int=_int, object_pairs_hook=_object
)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(data: bytes) -> bool:
    """Nesting deeper than MAX_DEPTH, found without recursing (brackets in strings skipped)."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKET):
        depth += 1 if byte in b"[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def _has_lone_surrogate(state: dict) -> bool:
    try:
        json.dumps(state, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def _decode(decoder: json.JSONDecoder, text: str):
    try:
        return decoder.decode(text)
    except BadState:
        raise
    except ValueError as exc:
        raise BadState("not_json", str(exc)[:80]) from None
    except RecursionError:  # _too_deep makes this unreachable; it must never escape anyway
        raise BadState("too_deep", "nested too deep to decode") from None


def parse_state(data: bytes, max_size: int = MAX_DATAGRAM) -> dict:
    """One datagram -> one checked state, or BadState saying why not (never anything else).

    A UTF-8 BOM at the start is ignored (RFC 8259 allows it); see log_line.
    """
    if len(data) > max_size:
        raise BadState("too_large", f"{len(data)} bytes > {max_size}")
    if data.startswith(BOM):
        data = data[3:]
    if _too_deep(data):
        raise BadState("too_deep", f"nested deeper than {MAX_DEPTH}")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise BadState("not_utf8", str(exc)[:80]) from None
    state = _decode(_plain, text)
    if not isinstance(state, dict):
        raise BadState("not_object", type(state).__name__)
    if len(state) != len(FIELDS) or data.count(b":") != len(FIELDS):  # extras, repeats, ':'
        state = _decode(_strict, text)
    for name, kinds in FIELDS.items():
        value = state.get(name)
        if value is None:
            raise BadState("missing_field", name)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise BadState("bad_type", f"{name} is {type(value).__name__}")
    if b"\\u" in data and _has_lone_surrogate(state):
        raise BadState("bad_string", "a lone surrogate (\\ud800-\\udfff) in a string")
    for name in NUMBERS:  # the strict decoder checked these already; the plain one did not
        value = state[name]
        if type(value) is int:
            if not INT64_MIN <= value <= INT64_MAX:
                raise BadState("out_of_range", f"{name} does not fit int64")
        elif value - value:  # inf - inf is nan
            raise BadState("non_finite", f"{name} does not fit a double")
    engine, mode = state["engine_id"], state["scheduling_mode"]
    if not (engine.isprintable() and mode.isprintable()):
        raise BadState("bad_string", "a name has a control or non-printable character")
    if not 0 < len(engine) <= MAX_STRING or len(mode) > MAX_STRING:
        raise BadState("bad_value", "engine_id must be 1-256 characters, scheduling_mode <= 256")
    if (
        state["timestamp_ms"] < 0
        or state["pending_tokens_total"] < 0
        or not 0 <= state["kv_cache_free_blocks"] <= state["kv_cache_total_blocks"]
    ):
        raise BadState("bad_value", "timestamp and counts must be >= 0, free blocks <= total")
    return state


def log_line(data: bytes, state: dict) -> bytes:
    """The log line for a good datagram: its bytes without a BOM or surrounding whitespace;
    re-serialized when the sender spread it over lines (one state per line in the log)."""
    line = data[3:].strip() if data.startswith(BOM) else data.strip()
    if b"\n" in line:
        line = json.dumps(state, separators=(",", ":")).encode()
    return line + b"\n"
