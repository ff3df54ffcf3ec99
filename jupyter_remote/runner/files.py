"""Files in and out of the container, done by the runner itself (issue 12).

Stdlib only, Python 3.8 or newer. Through Docker's archive API every byte of a transfer was
tarred or untarred by dockerd (~1.4 s of CPU per GB in, ~3 s out on a 2-core box); here
the runner writes what the agent sends straight to files, and reads files straight to its
socket with ``sendfile``. The agent has already checked every member (names, links, sizes)
before any byte reaches the runner (jupyter_remote.protocol.tarstream.StreamCheck).

``put`` reads members framed by the agent: a JSON line ``{"name", "type", "mode", "mtime",
"size"|"target"}`` per member (types ``file``, ``dir``, ``symlink``, ``link``), a file's
``size`` bytes right after its line, and ``{"end": true}`` last. ``get`` writes a POSIX tar
(PAX headers) of a path, its top member named after the path's last part, as ``docker cp``
gives it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile

CHUNK = 1 << 20
MAX_MEMBER_LINE = 64 << 10
BLOCK = tarfile.BLOCKSIZE


class FileRefused(Exception):
    """A transfer the runner will not do; ``reason`` as in the protocol's error events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SocketReader:
    """Lines and exact byte counts from a socket, after bytes already read past a line."""

    def __init__(self, sock, first: bytes = b"") -> None:
        self.sock = sock
        self.buf = bytearray(first)

    def _fill(self) -> bool:
        data = self.sock.recv(CHUNK)
        self.buf += data
        return bool(data)

    def readline(self, limit: int = MAX_MEMBER_LINE) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > limit:
                raise FileRefused("bad_request", "a member line is too long")
            if not self._fill():
                raise FileRefused("bad_request", "the upload ended before its last member")

    def copy_to(self, fd: int, size: int, scratch: memoryview) -> None:
        """Exactly ``size`` bytes of the stream into ``fd``."""
        if self.buf:
            take = min(size, len(self.buf))
            _write_all(fd, memoryview(self.buf)[:take])
            del self.buf[:take]
            size -= take
        while size > 0:
            got = self.sock.recv_into(scratch[: min(size, len(scratch))])
            if not got:
                raise FileRefused("bad_request", "the upload ended inside a file")
            _write_all(fd, scratch[:got])
            size -= got


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def stat_path(path: str) -> dict:
    """Whether ``path`` exists in the container and is a directory (links followed)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"ok": True, "exists": False, "dir": False}
    except OSError as exc:
        raise FileRefused("transfer_refused", f"{path}: {exc.strerror}") from None
    return {"ok": True, "exists": True, "dir": stat.S_ISDIR(st.st_mode)}


def _member_path(into: str, name) -> str:
    if not isinstance(name, str) or not name or "\0" in name:
        raise FileRefused("bad_request", "a member has no name")
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise FileRefused("bad_request", f"member {name!r} would land outside {into}")
    return os.path.join(into, name)


def put_members(reader: SocketReader, into: str) -> dict:
    """Write the framed members under the directory ``into``; directories' modes and times
    are set last (a read-only directory still gets its files)."""
    if not os.path.isdir(into):
        raise FileRefused("path_not_found", f"no such directory in the container: {into}")
    scratch = memoryview(bytearray(CHUNK))
    files = size = 0
    dirs, made = [], set()
    try:
        while True:
            try:
                member = json.loads(reader.readline())
            except ValueError as exc:
                raise FileRefused("bad_request", f"a member line is not JSON: {exc}") from None
            if not isinstance(member, dict):
                raise FileRefused("bad_request", "a member line must be a JSON object")
            if member.get("end"):
                break
            path = _member_path(into, member.get("name"))
            kind, mode = member.get("type"), int(member.get("mode", 0o644)) & 0o7777
            mtime = member.get("mtime")
            if kind == "dir":
                os.makedirs(path, exist_ok=True)
                dirs.append((path, mode, mtime))
                continue
            parent = os.path.dirname(path)
            if parent not in made and not os.path.isdir(parent):
                os.makedirs(parent)  # a member whose directory the archive left out
            made.add(parent)
            if os.path.lexists(path) and not os.path.isdir(path):
                os.unlink(path)  # replaced, as tar and docker cp do (a link is not followed)
            if kind == "file":
                length = member.get("size")
                if not isinstance(length, int) or length < 0:
                    raise FileRefused("bad_request", f"member {path} has no size")
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(path, flags, 0o600)
                try:
                    reader.copy_to(fd, length, scratch)
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                files, size = files + 1, size + length
            elif kind == "symlink":
                os.symlink(str(member.get("target")), path)
            elif kind == "link":
                os.link(_member_path(into, member.get("target")), path)
            else:
                raise FileRefused("bad_request", f"member {path} has an unknown type {kind!r}")
            if isinstance(mtime, (int, float)):
                os.utime(path, (mtime, mtime), follow_symlinks=False)
    except OSError as exc:
        raise FileRefused("transfer_refused", f"{exc.filename or into}: {exc.strerror}") from None
    for path, mode, mtime in reversed(dirs):
        try:
            os.chmod(path, mode)
            if isinstance(mtime, (int, float)):
                os.utime(path, (mtime, mtime))
        except OSError:
            pass
    return {"ok": True, "files": files, "size": size}


def rename(src: str, dst: str) -> dict:
    """Move a staged upload into place (replacing a file, as ``mv -f`` does)."""
    try:
        os.rename(src, dst)
    except OSError as exc:
        raise FileRefused("transfer_refused", f"{dst}: {exc.strerror}") from None
    return {"ok": True}


def remove(path: str) -> dict:
    """Remove a staged upload that was refused (a file, a link or a whole tree)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    except OSError as exc:
        raise FileRefused("transfer_refused", f"{path}: {exc.strerror}") from None
    return {"ok": True}


# kernel filesystems: their directories are listed, never their contents (a tar of / must
# end, and Docker's archive of a container's / has none of them either)
PSEUDO = ("/proc", "/sys", "/dev")


def _entries(path: str):
    """(host path, name in the archive) of ``path`` and everything under it, top first."""
    top = os.path.basename(os.path.normpath(path)) or "."
    yield path, top
    if os.path.isdir(path) and not os.path.islink(path) and path not in PSEUDO:
        for root, dirnames, filenames in os.walk(path):
            rel = os.path.relpath(root, path)
            base = top if rel == "." else os.path.join(top, rel)
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                yield os.path.join(root, name), os.path.join(base, name)
            dirnames[:] = [d for d in dirnames if os.path.join(root, d) not in PSEUDO]


def send_tar(sock, path: str) -> None:
    """A tar of ``path`` to ``sock``: headers written, file contents sent with ``sendfile``
    (page cache to socket, no copy through Python). A file that shrank while it was read
    is padded with zeros, as tar does; special files are left out."""
    for host_path, name in _entries(path):
        try:
            st = os.lstat(host_path)
        except FileNotFoundError:
            continue  # removed while walking
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
        info.uid, info.gid = st.st_uid, st.st_gid
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(host_path)
        elif stat.S_ISREG(st.st_mode):
            info.type, info.size = tarfile.REGTYPE, st.st_size
        else:
            continue
        try:
            fh = open(host_path, "rb") if info.isreg() else None
        except OSError:
            continue  # unreadable: left out, as it would fail half-way
        try:
            sock.sendall(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            if fh is not None:
                left = info.size - sock.sendfile(fh, 0, info.size)
                while left > 0:  # the file shrank meanwhile
                    sock.sendall(bytes(min(left, CHUNK)))
                    left -= min(left, CHUNK)
                if info.size % BLOCK:
                    sock.sendall(bytes(BLOCK - info.size % BLOCK))
        finally:
            if fh is not None:
                fh.close()
    sock.sendall(bytes(2 * BLOCK))
