"""Reading a cell's output pipes as data comes, cut at UTF-8 character boundaries.

Shell cells and the Python worker both go through ``pump``: no line buffering, reads of up
to 1 MiB (the pipes are widened to hold that much), and for the worker a control pipe of
JSON lines read in order with its output.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors

try:
    from .carried import rules
except ImportError:  # run from its directory (in a container): siblings are top-level modules
    from carried import rules

CHUNK = 1 << 20  # an output pipe's size and the most one read (one event) takes
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # in fcntl from Python 3.10


def widen_pipe(fd: int) -> None:
    """Make an output pipe hold CHUNK bytes (64 KiB by default): a fast writer then fills
    1 MiB events, not 64 KiB ones, so a flood costs 16x fewer events on every hop. Best
    effort: a user over the kernel's pipe-user-pages limit keeps the default."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, CHUNK)
    except OSError:
        pass


def pump(sources: dict, on_data, should_stop=None, on_line=None, drain_first=()) -> None:
    """Read pipes as data comes (no line buffering) until every one is at EOF.

    ``sources`` maps fd -> name; data goes to ``on_data(name, data)`` as bytes cut at UTF-8
    character boundaries. An fd named ``"control"`` carries JSON lines for ``on_line(obj)``;
    before each such line the fds in ``drain_first`` are read dry so output written before it
    is emitted before it. ``should_stop()`` ends the loop early (checked every 0.1 s).
    """
    sel = selectors.DefaultSelector()
    held = {}  # fd -> the start of a character a read cut
    pending = b""
    for fd, name in sources.items():
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
        if name != "control":
            held[fd] = b""
            widen_pipe(fd)
    open_fds = set(sources)

    def read(fd):
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            open_fds.discard(fd)
            sel.unregister(fd)
            if held.get(fd):
                on_data(sources[fd], held[fd])  # a torn character at the end: as it is
                held[fd] = b""
        return data

    def deliver(fd, chunk):
        if held[fd]:
            chunk = held[fd] + chunk
        cut = rules.incomplete_tail(chunk)
        if cut:
            held[fd], chunk = chunk[-cut:], chunk[:-cut]
        else:
            held[fd] = b""
        if chunk:
            on_data(sources[fd], chunk)

    try:
        while open_fds:
            if should_stop is not None and should_stop():
                break
            for key, _ in sel.select(0.1):
                fd = key.fd
                if fd not in open_fds:
                    continue
                if key.data == "control":
                    data = read(fd)
                    if data is None:
                        continue
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        for other in drain_first:
                            while other in open_fds:
                                chunk = read(other)
                                if not chunk:
                                    break
                                deliver(other, chunk)
                        on_line(json.loads(line))
                    continue
                while fd in open_fds:
                    chunk = read(fd)
                    if not chunk:
                        break
                    deliver(fd, chunk)
                    if len(chunk) < CHUNK:
                        break
    finally:
        sel.close()
