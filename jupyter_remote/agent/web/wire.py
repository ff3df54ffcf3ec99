"""Request bytes to typed bodies at the agent's edge."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel

from jupyter_remote.protocol.errors import BadRequest
from jupyter_remote.protocol.validation import load_object, parse_body

M = TypeVar("M", bound=BaseModel)


def read_body(raw: bytes, model: type[M]) -> M:
    """The typed body, or a 400 naming the field and the rule.

    NaN and Infinity are not JSON and never accepted; when they are the only fault, the
    body is read once more with them as floats so that the 400 names the field they are in
    (every float field refuses them). Depth is bounded by load_object before that.
    """
    try:
        data = load_object(raw)
    except BadRequest as exc:
        if "not standard JSON" not in exc.message:
            raise
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise exc from None
        if not isinstance(data, dict):
            raise exc from None
        parse_body(model, data)  # names the field; should it pass, the JSON rule still holds
        raise exc from None
    return parse_body(model, data)
