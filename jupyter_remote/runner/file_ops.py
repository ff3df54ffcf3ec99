"""The file requests (stat, put, get, rename, remove): checked here, done by files.py.

files.py is imported at the first transfer: tarfile and shutil would add ~1 MiB to every
idle runner (docs/runner.md, "Files").
"""

from __future__ import annotations

import socket

try:
    from .wire import Refused, container_path, encode
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    from wire import Refused, container_path, encode

FILE_OPS = ("stat", "put", "get", "rename", "remove")


def files_module():
    """The file operations (files.py), imported at the first transfer."""
    try:
        from . import files
    except ImportError:
        import files
    return files


def file_op(conn: socket.socket, op: str, req: dict, rest: bytes) -> None:
    """Serve one file request; ``rest`` is what was read past its line (an upload's start)."""
    files = files_module()
    try:
        _serve(conn, files, op, req, rest)
    except files.FileRefused as exc:
        raise Refused(exc.reason, exc.message) from None


def _serve(conn: socket.socket, files, op: str, req: dict, rest: bytes) -> None:
    if op == "get":
        path = container_path(req.get("path"))
        if not files.stat_path(path)["exists"]:
            raise Refused("path_not_found", f"no such path in the container: {path}")
        conn.sendall(encode({"ok": True}))
        files.send_tar(conn, path)
        return
    if op == "put":
        into = container_path(req.get("into"))
        answer = files.put_members(files.SocketReader(conn, rest), into)
    elif op == "stat":
        answer = files.stat_path(container_path(req.get("path")))
    elif op == "rename":
        answer = files.rename(container_path(req.get("src")), container_path(req.get("dst")))
    else:
        answer = files.remove(container_path(req.get("path")))
    conn.sendall(encode(answer))
