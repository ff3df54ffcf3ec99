"""How the kernel side reads an execution's events: the first exit is final, notices once.

Pure logic: canned events, and a canned NDJSON answer over real HTTP (a broken
connection's second exit cannot be produced on demand by the real stack).
"""

from __future__ import annotations

import io
import json
import queue
import threading
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ipython_shell
from jupyter_remote.kernel.client import ExecutionStream, RemoteClient
from jupyter_remote.kernel.execution import EventFold, RemoteResult
from jupyter_remote.kernel.magics import RemoteMagics
from jupyter_remote.protocol.errors import ConnectionFailed

STARTED = {"event": "started", "node_id": "n1"}
DONE = {"event": "exit", "returncode": 0, "status": "completed", "duration": 0.1}
UNKNOWN = {"event": "exit", "returncode": -1, "status": "unknown", "message": "stream broke"}
NOTICE = {
    "event": "notice",
    "message": "this kernel's session on node n1 was removed after 3600 s idle "
    "(its files are gone); a new one was made",
}


def fold(events: list[dict]) -> tuple[RemoteResult, str, str]:
    result = RemoteResult("x-1")
    folding = EventFold(result)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        for event in events:
            folding.feed(event)
    folding.finish()
    return result, out.getvalue(), err.getvalue()


def test_the_first_exit_event_is_the_result():
    events = [STARTED, {"event": "stdout", "data": "hi\n"}, DONE, UNKNOWN]
    events.append({"event": "stdout", "data": "late\n"})
    result, out, _ = fold(events)
    assert (result.returncode, result.status, result.message) == (0, "completed", None)
    assert out == "hi\n" and result.stdout == "hi\n" and result.node_id == "n1"


def test_a_notice_is_one_line_on_stderr_once_and_kept():
    limits = {"event": "notice", "message": "limits apply when the session is made;\nrun it"}
    result, out, err = fold([STARTED, NOTICE, NOTICE, limits, DONE])
    assert result.notices == [NOTICE["message"], limits["message"]]
    assert err.splitlines() == [
        f"[remote] {NOTICE['message']}",
        "[remote] limits apply when the session is made; run it",
    ]
    assert out == "" and result.stderr == "" and result.returncode == 0


def test_the_stream_ends_at_the_first_exit_and_later_errors_are_dropped():
    def events():
        yield STARTED
        yield DONE
        yield UNKNOWN
        raise ConnectionFailed("reset after the end")

    assert list(ExecutionStream(events())) == [STARTED, DONE]

    def broken():
        yield STARTED
        raise ConnectionFailed("reset mid-way")

    stream = ExecutionStream(broken())
    assert stream.next() == STARTED
    with pytest.raises(ConnectionFailed):
        stream.next()
    with pytest.raises(ConnectionFailed):  # and it stays broken
        stream.next()


def test_waiting_for_an_event_can_stop_and_resume_on_the_same_stream():
    gate = threading.Event()

    def slow():
        yield STARTED
        gate.wait(10)
        yield DONE

    stream = ExecutionStream(slow())
    assert stream.next() == STARTED
    with pytest.raises(queue.Empty):
        stream.next(timeout=0.2)  # what an interrupt does: the caller stops waiting
    gate.set()
    assert stream.next(timeout=5) == DONE and stream.next() is None


class _Canned(BaseHTTPRequestHandler):
    """/remote/api answering an execution with a second exit after the true one."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/sessions"):
            body = json.dumps({"node_id": "n1", "session_id": "s1"}).encode()
            ctype = "application/json"
        else:
            lines = [STARTED, NOTICE, {"event": "stdout", "data": "ok\n"}, DONE, UNKNOWN]
            body = b"".join(json.dumps(e).encode() + b"\n" for e in lines)
            ctype = "application/x-ndjson"
        self.send_response(200 if "executions" in self.path else 201)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def canned_client():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield RemoteClient(f"http://127.0.0.1:{server.server_address[1]}", "t")
    server.shutdown()
    server.server_close()


def test_remote_docker_environment_keeps_the_true_exit(canned_client):
    from jupyter_remote import RemoteDockerEnvironment

    env = RemoteDockerEnvironment(client=canned_client)
    assert env.execute("true") == {
        "output": "ok\n",
        "returncode": 0,
        "status": "completed",
        "node_id": "n1",
        "notices": [NOTICE["message"]],
    }


def test_a_remote_cell_keeps_the_true_exit_and_shows_the_notice(canned_client):
    ip = ipython_shell()
    magics = RemoteMagics(ip, client=canned_client)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        magics.remote("--fresh --result canned", "true")
    result = ip.user_ns["canned"]
    assert (result.returncode, result.status) == (0, "completed")
    # the footer: the node and image the started event named, the exit's duration
    image = STARTED.get("image", "?")
    assert out.getvalue().startswith("ok\n[remote] n1 · ") and f" · {image} · " in out.getvalue()
    assert out.getvalue().endswith(" s · exit 0\n")
    assert err.getvalue() == f"[remote] {NOTICE['message']}\n"
    assert result.notices == [NOTICE["message"]]


def test_display_events_are_published_as_display_data_in_order():
    from IPython.utils.capture import capture_output

    ipython_shell()  # display needs a shell to publish through
    html = {"event": "display", "data": {"text/html": "<b>hi</b>", "text/plain": "hi"}}
    png = {"event": "display", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}
    result = RemoteResult("x-2")
    folding = EventFold(result)
    with capture_output() as captured:
        for event in (STARTED, html, {"event": "stdout", "data": "between\n"}, png, DONE, png):
            folding.feed(event)
    assert [o.data for o in captured.outputs] == [html["data"], png["data"]]
    assert [d["data"] for d in result.displays] == [html["data"], png["data"]]
    assert captured.stdout == "between\n"
