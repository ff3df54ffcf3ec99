"""Tar streams for file transfers: built and unpacked in chunks, member names checked.

Used by the kernel side (packing a local file or directory, unpacking a download) and by
the agent (checking an upload's members and re-writing their headers before Docker sees
them). Nothing here holds more than one chunk of file data in memory.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE
ALLOWED = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)


class BadArchive(ValueError):
    """A tar member that could write outside its tree, or a stream that is not a tar."""


def _pad(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def local_size(path: str) -> int:
    """Bytes of file data under `path` (for the progress bar)."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total


def _info(full: str, arcname: str) -> tarfile.TarInfo:
    st = os.lstat(full)
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
    else:
        raise BadArchive(f"{full} is not a file, directory or symlink")
    return info


class Packed:
    """A tar of `path` (file or directory tree) named `arcname`: iterated in chunks, and
    its exact length known up front (an upload then carries a Content-Length: no chunked
    framing, nor the copies it costs, at any hop)."""

    def __init__(
        self, path: str, arcname: str, progress: Callable[[int], None] = lambda n: None
    ) -> None:
        entries = [(path, arcname)]
        if os.path.isdir(path) and not os.path.islink(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                rel = os.path.relpath(root, path)
                for name in sorted(dirs) + sorted(files):
                    sub = name if rel == "." else posixpath.join(*rel.split(os.sep), name)
                    entries.append((os.path.join(root, name), f"{arcname}/{sub}"))
        self.members = [(full, _info(full, name)) for full, name in entries]
        self.progress = progress
        self.length = 2 * BLOCK + sum(
            len(info.tobuf(format=tarfile.PAX_FORMAT)) + info.size + len(_pad(info.size))
            for _full, info in self.members
        )

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        for full, info in self.members:
            yield info.tobuf(format=tarfile.PAX_FORMAT)
            if info.type != tarfile.REGTYPE:
                continue
            left = info.size
            with open(full, "rb") as fh:
                while left > 0:
                    chunk = fh.read(min(CHUNK, left))
                    if not chunk:
                        raise BadArchive(f"{full} shrank while it was being sent")
                    left -= len(chunk)
                    self.progress(len(chunk))
                    yield chunk
            yield _pad(info.size)
        yield b"\0" * (2 * BLOCK)


def pack(
    path: str, arcname: str, progress: Callable[[int], None] = lambda n: None
) -> Iterator[bytes]:
    """A tar of `path` (file or directory tree) named `arcname`, yielded in chunks."""
    return iter(Packed(path, arcname, progress))


def check_member(info: tarfile.TarInfo, links: set[str], seen: set[str]) -> str:
    """The member's normal name; BadArchive when it could reach outside the archive's tree."""
    name = info.name
    if "\0" in name or "\0" in info.linkname:
        raise BadArchive(f"member name {name!r} holds a NUL byte")
    if name.startswith("/") or posixpath.isabs(name):
        raise BadArchive(f"member {name!r} has an absolute name")
    norm = posixpath.normpath(name)
    if norm == "." or norm == ".." or norm.startswith("../") or ".." in name.split("/"):
        raise BadArchive(f"member {name!r} climbs out of the archive with '..'")
    if info.type not in ALLOWED:
        raise BadArchive(f"member {name!r} is a device, FIFO or other special file")
    parts = norm.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise BadArchive(f"member {name!r} is written through a symlink in the archive")
    if info.type == tarfile.SYMTYPE:
        target = info.linkname
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(norm), target))
        if posixpath.isabs(target) or joined == ".." or joined.startswith("../"):
            raise BadArchive(f"symlink {name!r} -> {target!r} points outside the archive")
        links.add(norm)
    if info.type == tarfile.LNKTYPE and posixpath.normpath(info.linkname) not in seen:
        raise BadArchive(f"hard link {name!r} -> {info.linkname!r} is not to an earlier member")
    seen.add(norm)
    return norm


def checked_members(path: str) -> list[tarfile.TarInfo]:
    """Every member of the spooled tar at `path`, checked (headers only: data is skipped)."""
    links: set[str] = set()
    seen: set[str] = set()
    out = []
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                info.name = check_member(info, links, seen)
                out.append(info)
    except tarfile.TarError as exc:
        raise BadArchive(f"the body is not a tar archive: {exc}") from None
    if not out:
        raise BadArchive("the archive is empty")
    tops = {m.name.split("/")[0] for m in out}
    if len(tops) != 1:
        raise BadArchive(f"the archive must hold one top-level entry; it holds {sorted(tops)}")
    return out


def rewrite(path: str, members: list[tarfile.TarInfo], rename: str | None) -> Iterator[bytes]:
    """The spooled tar re-written from checked members: clean headers, the top renamed."""
    with open(path, "rb") as fh:
        for info in members:
            out = tarfile.TarInfo(_renamed(info.name, rename))
            out.mode, out.mtime, out.type = info.mode & 0o7777, int(info.mtime), info.type
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                link = info.linkname
                out.linkname = _renamed(posixpath.normpath(link), rename) if info.islnk() else link
            if info.isreg():
                out.size = info.size
            yield out.tobuf(format=tarfile.PAX_FORMAT)
            if not info.isreg():
                continue
            fh.seek(info.offset_data)
            left = info.size
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise BadArchive("the archive ends inside a member's data")
                left -= len(chunk)
                yield chunk
            yield _pad(info.size)
    yield b"\0" * (2 * BLOCK)


def _renamed(name: str, rename: str | None) -> str:
    if not rename:
        return name
    _top, sep, rest = name.partition("/")
    return rename + sep + rest


def unpack(chunks, dest: str) -> list[str]:
    """Unpack a downloaded tar (an iterator of byte chunks): its top entry becomes `dest` (or
    goes inside it, when `dest` is a directory). Python's 'data' filter refuses anything
    leaving the tree."""
    into_dir = os.path.isdir(dest)
    root = dest if into_dir else os.path.dirname(os.path.abspath(dest))
    names = []
    reader = ForwardReader(chunks)
    with tarfile.open(fileobj=reader, mode="r:", copybufsize=CHUNK // 4) as tar:
        for info in tar:
            if not into_dir:
                info.name = _renamed(info.name, os.path.basename(os.path.abspath(dest)))
            tar.extract(info, root, filter="data")
            names.append(info.name)
    return names


class ChunkReader:
    """A blocking, forward-only file-like view of an iterator of byte chunks; member data
    passes through as slices of the chunks as they came (no copies)."""

    def __init__(self, chunks) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")
        self.pos = 0

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._view = memoryview(chunk)
                return True
        return False

    def tell(self) -> int:
        return self.pos

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes, fewer only at the end of the stream (headers: small)."""
        parts = []
        while size > 0 and (self._view or self._fill()):
            take = self._view[:size]
            self._view = self._view[len(take) :]
            parts.append(take)
            size -= len(take)
            self.pos += len(take)
        return b"".join(parts)

    def pieces(self, size: int) -> Iterator[memoryview]:
        """The next `size` bytes as slices of the incoming chunks."""
        while size > 0:
            if not self._view and not self._fill():
                raise BadArchive("the archive ends inside a member's data")
            take = self._view[:size]
            self._view = self._view[len(take) :]
            size -= len(take)
            self.pos += len(take)
            yield take

    def skip(self, size: int) -> None:
        for _ in self.pieces(size):
            pass


class ForwardReader(ChunkReader):
    """What tarfile's random-access mode asks of a file (tell, seeks that only go forward),
    over a stream of chunks: tarfile then reads member data straight from it, where its
    stream mode ('r|') joins and re-slices a buffer, copying every byte about four times.
    A large read inside one chunk is a slice of it, not a copy."""

    LARGE = 64 << 10

    def read(self, size: int = -1) -> bytes | memoryview:
        if size >= self.LARGE and (self._view or self._fill()) and len(self._view) >= size:
            take, self._view = self._view[:size], self._view[size:]
            self.pos += size
            return take
        return super().read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < self.pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        left = offset - self.pos
        while left > 0 and (self._view or self._fill()):  # past the end: reads come back empty
            step = min(left, len(self._view))
            self._view = self._view[step:]
            self.pos += step
            left -= step
        return self.pos


class StreamCheck:
    """An incoming tar checked member by member as it passes (check_member's rules, one
    top-level entry) and re-written with clean headers: the top entry renamed to `top`, a
    member's header is only emitted once it has been checked."""

    def __init__(self, chunks) -> None:
        self.reader = ChunkReader(chunks)
        self._tar = _Headers(self.reader)
        self._links: set[str] = set()
        self._seen: set[str] = set()
        self.first: tarfile.TarInfo | None = None
        self.files = self.size = 0
        self._next = self._read()

    def _read(self) -> tarfile.TarInfo | None:
        try:
            info = tarfile.TarInfo.fromtarfile(self._tar)
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):
            info = None
        except tarfile.TarError as exc:
            raise BadArchive(f"the body is not a tar archive: {exc}") from None
        if info is None:
            if self.first is None:
                raise BadArchive("the archive is empty")
            return None
        info.name = check_member(info, self._links, self._seen)
        if self.first is None:
            self.first = info
        elif info.name.split("/")[0] != self.first.name.split("/")[0]:
            raise BadArchive(
                f"the archive must hold one top-level entry; it holds {self.first.name!r} "
                f"and {info.name!r}"
            )
        return info

    def peek(self) -> tarfile.TarInfo:
        """The first member, checked (BadArchive when there is none)."""
        return self.first if self.first is not None else self._next

    def rewritten(self, top: str) -> Iterator[bytes | memoryview]:
        """The checked members as a tar with clean headers, the top entry renamed `top`."""
        yield from self._emit(top, lambda out: out.tobuf(format=tarfile.PAX_FORMAT), _pad)
        yield b"\0" * (2 * BLOCK)

    def framed(self, top: str) -> Iterator[bytes | memoryview]:
        """The same members framed for a container's runner (docs/runner.md, "Files"): a
        JSON line each, a file's bytes right after its line, no padding."""
        yield from self._emit(top, _member_line, None)
        yield b'{"end":true}\n'

    def _emit(self, top: str, head, pad) -> Iterator[bytes | memoryview]:
        info = self._next
        while info is not None:
            out = tarfile.TarInfo(_renamed(info.name, top))
            out.mode, out.mtime, out.type = info.mode & 0o7777, int(info.mtime), info.type
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                link = info.linkname
                out.linkname = _renamed(posixpath.normpath(link), top) if info.islnk() else link
            if info.isreg():
                out.size = info.size
            yield head(out)
            if info.isreg():
                self.files += 1
                self.size += info.size
                yield from self.reader.pieces(info.size)
                if pad is not None:
                    yield pad(info.size)
            self.reader.skip(self._tar.offset - self.reader.pos)
            info = self._read()


def _member_line(info: tarfile.TarInfo) -> bytes:
    member = {"name": info.name, "mode": info.mode, "mtime": info.mtime}
    if info.isreg():
        member.update(type="file", size=info.size)
    elif info.isdir():
        member["type"] = "dir"
    elif info.issym():
        member.update(type="symlink", target=info.linkname)
    else:
        member.update(type="link", target=info.linkname)
    return json.dumps(member, separators=(",", ":")).encode("utf-8", "surrogateescape") + b"\n"


class _Headers:
    """What tarfile.TarInfo.fromtarfile needs of a TarFile, over a forward-only reader."""

    def __init__(self, reader: ChunkReader) -> None:
        self.fileobj = reader
        self.offset = 0
        self.pax_headers: dict = {}
        self.encoding = tarfile.ENCODING
        self.errors = "surrogateescape"
