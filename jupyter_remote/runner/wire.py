"""The runner's side of its socket: reading a request line, checking it, writing answers.

One connection per request; the request is one JSON line, the answer event records
(docs/runner.md, "Protocol"). A request the runner will not serve raises ``Refused``, which
becomes one ``{"event":"error",...}`` line.
"""

from __future__ import annotations

import json
import os
import socket

try:
    from .carried import rules
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    from carried import rules

MAX_REQUEST = 64 << 20  # one JSON line; a 16 MB cell escaped as JSON fits


class Refused(Exception):
    """A request the runner will not serve; ``reason`` as in the protocol's error events."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def encode(event: dict) -> bytes:
    """One plain event line (output goes as sized records: see records.py)."""
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode(
        "utf-8", "replace"
    )


def send_parts(send, parts) -> None:
    """Every byte of ``parts`` through ``send(buffers) -> bytes taken`` (writev, sendmsg):
    an output record goes out as its head and its data, never copied into one."""
    views = [memoryview(p) for p in parts if p]
    while views:
        taken = send(views)
        while views and taken >= len(views[0]):
            taken -= len(views[0])
            views.pop(0)
        if taken:
            views[0] = views[0][taken:]


def send_file(sock: socket.socket, path: str, start: int, end: int) -> None:
    """Bytes ``start:end`` of the file at ``path`` (a spool) to the socket."""
    if end <= start:
        return
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            data = f.read(min(left, 1 << 20))
            if not data:
                break
            sock.sendall(data)
            left -= len(data)


def close_quietly(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


def read_request(conn: socket.socket) -> tuple[dict, bytes]:
    """The request line, and what was read past it (the start of an upload's members)."""
    buf, rest = bytearray(), b""
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        end = chunk.find(b"\n")
        if end >= 0:
            buf += chunk[:end]
            rest = chunk[end + 1 :]
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise Refused("too_large", f"a request is at most {MAX_REQUEST} bytes")
    try:
        req = json.loads(bytes(buf))
    except ValueError as exc:
        raise Refused("bad_request", f"the request is not one JSON line: {exc}") from None
    if not isinstance(req, dict):
        raise Refused("bad_request", "the request must be a JSON object")
    return req, rest


def check_id(cid) -> str:
    """An execution id as the protocol has them (rules.valid_id): it names a spool file."""
    if not rules.valid_id(cid):
        raise Refused("bad_request", f"id must match {rules.ID_PATTERN}")
    return cid


def container_path(raw) -> str:
    """An absolute path as the agent sends them (normalised there; checked again here)."""
    if not rules.valid_path(raw) or not raw.startswith("/"):
        raise Refused("bad_request", "a path must be an absolute container path")
    return os.path.normpath(raw)


def check_run(req: dict) -> list:
    """Refuses a ``run`` request with a bad field; the ids it asks to forget, checked."""
    if req.get("kind") not in ("shell", "python"):
        raise Refused("bad_request", "kind must be 'shell' or 'python'")
    if not isinstance(req.get("code"), str):
        raise Refused("bad_request", "code must be a string")
    env = req.get("env")
    if env is not None and (
        not isinstance(env, dict)
        or not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in env.items())
    ):
        raise Refused("bad_request", "env must map names to strings (or null to unset)")
    workdir = req.get("workdir")
    if workdir is not None and not isinstance(workdir, str):
        raise Refused("bad_request", "workdir must be a string")
    timeout = req.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise Refused("bad_request", "timeout must be a positive number of seconds")
    count = req.get("execution_count")
    if count is not None and (
        not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 2**31
    ):
        raise Refused("bad_request", "execution_count must be an integer from 0 to 2**31-1")
    forget = req.get("forget") or []
    if not isinstance(forget, list) or len(forget) > rules.MAX_FORGET:
        raise Refused("bad_request", f"forget must be a list of at most {rules.MAX_FORGET} ids")
    return [check_id(fid) for fid in forget]
