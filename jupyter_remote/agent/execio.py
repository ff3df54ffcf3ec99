"""Running one `docker exec` with its input on stdin and its output demultiplexed.

A cell travels on stdin, never in argv: the kernel caps one argument at 128 KiB
(`argument list too long`), while a cell may be many megabytes.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from docker.utils.socket import STDOUT, frames_iter


def exec_output(api, exec_id: str, stdin: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """Start the exec, send `stdin` and close it, then yield (stdout, stderr) chunks."""
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    try:
        try:
            if stdin:
                raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the command ended (or was killed) before reading it all: report its output
        for stream, data in frames_iter(sock, tty=False):
            yield (data, b"") if stream == STDOUT else (b"", data)
    finally:
        response = getattr(sock, "_response", None)
        if response is not None:
            response.close()
        raw.close()
