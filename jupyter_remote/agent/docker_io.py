"""The one place that reaches into docker-py, requests, urllib3 and http.client internals,
for speed (docs/performance.md, "File transfers").

What it relies on, checked against the versions pyproject allows (docker >= 7.1 on
urllib3 1.26 or 2.x, requests >= 2.31) by tests/test_docker_io.py:
- docker-py's APIClient: ``_url`` (an endpoint's URL), ``_raise_for_status``, and
  ``get_adapter`` (requests' public Session method) with its adapter's
  ``get_connection_with_tls_context`` (requests >= 2.32) or ``get_connection``;
- urllib3's connection pool ``_new_conn()``: a connection of our own, set up as docker-py's
  (unix socket, TCP or TLS); urllib3's connections are ``http.client.HTTPConnection``
  subclasses, so ``http.client.HTTPConnection.request/getresponse`` are called on them
  unbound (the same on urllib3 1.26 and 2.x) and ``_http_vsn`` / ``_http_vsn_str`` ask
  for HTTP/1.0;
- the socket docker-py returns for an exec (``exec_start(socket=True)``): its ``_sock``
  (the raw socket under a SocketIO) and ``_response`` (the HTTP response to close), and
  ``docker.utils.socket.frames_iter`` to demultiplex it.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import tarfile
from collections.abc import Iterator
from http.client import HTTPException
from urllib.parse import urlencode, urlsplit

import requests
from docker.utils.socket import STDOUT, frames_iter
from urllib3.exceptions import HTTPError as Urllib3Error

from jupyter_remote.protocol.errors import Conflict, NotFound
from jupyter_remote.protocol.tarstream import CHUNK, BadArchive

PRIVATE_API_NAMES = ("_url", "_raise_for_status", "get_adapter")
PRIVATE_POOL_NAMES = ("_new_conn",)
PRIVATE_CONNECTION_NAMES = ("_http_vsn", "_http_vsn_str")
PRIVATE_EXEC_SOCKET_NAMES = ("_sock", "_response")
_TAR_END = 2 * tarfile.BLOCKSIZE


# -- docker exec -----------------------------------------------------------------------
def exec_output(api, exec_id: str, stdin: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """Start the exec, send `stdin` and close it, then yield (stdout, stderr) chunks.

    A cell travels on stdin, never in argv: the kernel caps one argument at 128 KiB
    (`argument list too long`), while a cell may be many megabytes."""
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


# -- the archive API -------------------------------------------------------------------
def path_stat(api, cid: str, path: str) -> dict | None:
    """Docker's stat of a container path (HEAD archive), None when it does not exist."""
    resp = api.head(api._url("/containers/{0}/archive", cid), params={"path": path})
    if resp.status_code == 404:
        return None
    api._raise_for_status(resp)
    raw = resp.headers.get("X-Docker-Container-Path-Stat")
    return json.loads(base64.b64decode(raw)) if raw else {}


def archive_conn(api, cid: str, path: str):
    """A connection of its own to the Docker engine (unix socket, TCP or TLS, as the client
    is set up), and the container's archive endpoint for `path`."""
    url = api._url("/containers/{0}/archive", cid)
    adapter = api.get_adapter(url)
    if hasattr(adapter, "get_connection_with_tls_context"):
        pool = adapter.get_connection_with_tls_context(
            requests.Request("GET", url).prepare(), verify=api.verify
        )
    else:  # requests < 2.32
        pool = adapter.get_connection(url)
    return pool._new_conn(), f"{urlsplit(url).path}?{urlencode({'path': path})}"


def put_archive(api, cid: str, into: str, pieces) -> None:
    """PUT a tar into the container at `into`, chunked: each piece goes to the socket as it
    is, after its size line (urllib3, under docker-py, copies every piece into new framed
    bytes: a fifth of the agent's time on an upload). An error from `pieces` drops the
    connection, so Docker sees a cut body and extracts no further."""
    conn, target = archive_conn(api, cid, into)
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/x-tar")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        sock, gap = conn.sock, b""
        for piece in pieces:
            if piece:
                sock.sendall(b"%s%x\r\n" % (gap, len(piece)))
                sock.sendall(piece)
                gap = b"\r\n"
        sock.sendall(gap + b"0\r\n\r\n")
        resp = http.client.HTTPConnection.getresponse(conn)  # as in archive_chunks
        if resp.status != 200:
            raise answer_error(resp.status, resp.read(1 << 16), into)
    except (OSError, HTTPException, Urllib3Error) as exc:
        raise Conflict(
            f"Docker did not take the archive at {into}: {exc}",
            reason="transfer_refused",
            path=into,
        ) from None
    finally:
        conn.close()


def archive_chunks(api, cid: str, path: str):
    """Docker's tar of `path`, as a blocking iterator of 1 MiB chunks (404 first if it is
    missing). Asked over HTTP/1.0, the daemon sends the tar unframed and ends by closing:
    over HTTP/1.1 it comes in alternating 2 KiB and 14 KiB chunks, and taking ~130,000 of
    them apart per GB in Python cost the agent more CPU than all its other work."""
    conn, target = archive_conn(api, cid, path)
    conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    try:
        # http.client's own calls: the same on urllib3 1.26 and 2.x connections
        http.client.HTTPConnection.request(conn, "GET", target, headers={"Host": "docker"})
        resp = http.client.HTTPConnection.getresponse(conn)
        if resp.status != 200:
            raise answer_error(resp.status, resp.read(1 << 16), path)
    except (OSError, HTTPException, Urllib3Error) as exc:
        conn.close()
        raise Conflict(
            f"Docker did not answer for {path}: {exc}", reason="transfer_refused", path=path
        ) from None
    except BaseException:
        conn.close()
        raise
    return unframed(resp, conn, path)


def answer_error(status: int, body: bytes, path: str):
    """Docker's error answer about a container path, as our 404 or 409."""
    try:
        why = json.loads(body).get("message") or body.decode(errors="replace")
    except (ValueError, AttributeError):
        why = body[:500].decode(errors="replace")
    if status == 404:
        return NotFound(
            f"no such path in the container: {path}", reason="path_not_found", path=path
        )
    return Conflict(f"the container refused {path}: {why}", reason="transfer_refused", path=path)


def unframed(resp, conn, path: str):
    """The body in 1 MiB reads; an unframed body ends at a close, so a daemon that died
    mid-way is told apart by the tar's end (two zero blocks) missing."""
    tail = b""
    try:
        while chunk := resp.read(CHUNK):
            tail = (tail + chunk[-_TAR_END:])[-_TAR_END:]
            yield chunk
    except (OSError, HTTPException, Urllib3Error) as exc:
        raise BadArchive(f"Docker's archive of {path} broke off: {exc}") from None
    finally:
        conn.close()
    if tail != bytes(_TAR_END):
        raise BadArchive(f"Docker's archive of {path} ended before the tar did")
