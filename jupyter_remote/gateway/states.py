"""What an engine state is: the fields, their types, and the checks on each datagram."""

from __future__ import annotations

import json

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
MAX_DATAGRAM = 4096
MAX_STRING = 256

REASONS = ("too_large", "not_json", "not_object", "missing_field", "bad_type", "bad_value")


class BadState(ValueError):
    """A datagram that is not an engine state; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def parse_state(data: bytes, max_size: int = MAX_DATAGRAM) -> dict:
    """One datagram -> one checked state, or BadState saying why not."""
    if len(data) > max_size:
        raise BadState("too_large", f"{len(data)} bytes > {max_size}")
    try:
        state = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadState("not_json", str(exc)[:80]) from None
    if not isinstance(state, dict):
        raise BadState("not_object", type(state).__name__)
    for name, kinds in FIELDS.items():
        value = state.get(name)
        if value is None:
            raise BadState("missing_field", name)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise BadState("bad_type", f"{name} is {type(value).__name__}")
    if not state["engine_id"] or len(state["engine_id"]) > MAX_STRING:
        raise BadState("bad_value", "engine_id must be 1-256 characters")
    if len(state["scheduling_mode"]) > MAX_STRING:
        raise BadState("bad_value", "scheduling_mode is too long")
    if (
        state["timestamp_ms"] < 0
        or state["kv_cache_total_blocks"] < 0
        or not (0 <= state["kv_cache_free_blocks"] <= max(state["kv_cache_total_blocks"], 0))
    ):
        raise BadState("bad_value", "timestamp and block counts must be >= 0, free <= total")
    return state
