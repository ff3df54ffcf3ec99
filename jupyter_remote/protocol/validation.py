"""From raw request bytes to a typed body, or one 400 that names the field and the rule."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from jupyter_remote.protocol.common import MAX_JSON_DEPTH
from jupyter_remote.protocol.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not standard JSON (numbers must be finite)")


def nesting_depth(raw: bytes) -> int:
    """The deepest [ or { nesting in a JSON text, strings skipped (cheap; never recurses)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def load_object(raw: bytes) -> dict:
    """One JSON object; NaN/Infinity, deep nesting and other JSON get a clear 400."""
    raw = raw or b"{}"
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and nesting_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(
            f"request body nests deeper than {MAX_JSON_DEPTH} levels", reason="bad_json"
        )
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", reason="bad_json") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", reason="bad_json")
    return data


def parse_body(model: type[M], data: dict, where: str = "") -> M:
    """The typed body; a 400 naming the first bad field (reason bad_FIELD) and every error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "body", "rule": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = errors[0]
        field = first["field"]
        top = field.split(".")[0] if field != "body" else "body"
        prefix = f"{where}: " if where else ""
        raise BadRequest(
            f"{prefix}{field}: {first['rule']}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""),
            reason=f"bad_{top}" if top != "body" else "bad_request",
            errors=errors,
        ) from None
