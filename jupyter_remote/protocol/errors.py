"""Errors shared by the agent, the server extension and the client, keyed by HTTP status."""

from __future__ import annotations

import json


class RemoteError(Exception):
    """Base of every jupyter-remote error; `status` is the HTTP status it maps to."""

    status = 500
    reason = "internal_error"

    def __init__(self, message: str, *, reason: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.details = details

    def to_json(self) -> dict:
        """The JSON body every API answers an error with."""
        return {"message": self.message, "reason": self.reason, **self.details}


class BadRequest(RemoteError):
    status = 400
    reason = "bad_request"


class Unauthorized(RemoteError):
    status = 401
    reason = "unauthorized"


class NotFound(RemoteError):
    status = 404
    reason = "not_found"


class Conflict(RemoteError):
    status = 409
    reason = "conflict"


class QuotaExceeded(RemoteError):
    """Over a tenant's (agent) or a user's (server) quota: nothing was made."""

    status = 403
    reason = "quota_exceeded"


QUOTA_KEYS = ("sessions", "cpus", "memory", "gpus")  # what a quota may limit, both sides


class PayloadTooLarge(RemoteError):
    status = 413
    reason = "payload_too_large"


class Unavailable(RemoteError):
    status = 503
    reason = "unavailable"


_BY_STATUS = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthorized,
        NotFound,
        Conflict,
        PayloadTooLarge,
        Unavailable,
    )
}


def error_from_response(status: int, body: dict | None) -> RemoteError:
    """Rebuild the error an API answered with, so callers can catch it by class."""
    body = body or {}
    cls = _BY_STATUS.get(status, RemoteError)
    details = {k: v for k, v in body.items() if k not in ("message", "reason")}
    err = cls(body.get("message") or f"HTTP {status}", reason=body.get("reason"), **details)
    err.status = status
    return err


def error_from_body(status: int, data: bytes, what: str = "") -> RemoteError:
    """The one way every client reads an error answer: the API's JSON `{"message", "reason"}`
    when it is there, else the start of whatever came (a proxy's HTML page, say)."""
    try:
        body = json.loads(data) if data else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = data[:500].decode("utf-8", "replace").strip()
        parts = [what, f"HTTP {status}", text] if what or text else []
        body = {"message": ": ".join(p for p in parts if p) or None}
    return error_from_response(status, body)


class ConnectionFailed(RemoteError):
    """The peer could not be reached or the connection broke; nothing is ever re-sent."""

    status = 502
    reason = "connection_failed"


class TimedOut(ConnectionFailed):
    status = 504
    reason = "timed_out"
