"""The cell's streamed POST without requests (lean_stream.py), against a real loopback server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jupyter_remote.http.api import HttpApi
from jupyter_remote.http.lean_stream import LeanStreams
from jupyter_remote.protocol.errors import BadRequest, ConnectionFailed

EVENTS = [{"event": "started"}, {"event": "stdout", "data": "1\n"}, {"event": "exit"}]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list = []

    def setup(self) -> None:
        super().setup()
        Handler.connections.append(self.connection)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("bad"):
            data = json.dumps({"error": "bad", "reason": "bad_x", "message": "x is bad"})
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data.encode())
            return
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in EVENTS:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    Handler.connections = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_events_whole_connection_reused_and_dropped_ones_replaced(server):
    url = f"http://127.0.0.1:{server.server_port}/api"
    streams, api, closed = LeanStreams(url, {}, 5), HttpApi(url), []
    for _ in range(3):
        answer = streams.post("/x", {"a": 1}, 10, lambda: closed.append(1))
        assert list(api._events(answer, "test")) == EVENTS
    assert len(closed) == 3  # each answer's slot given back once
    assert len(Handler.connections) == 1  # read to its end, the connection was kept
    Handler.connections[0].shutdown(2)  # the server drops the idle connection
    answer = streams.post("/x", {"a": 1}, 10, lambda: None)
    assert list(api._events(answer, "test")) == EVENTS
    assert len(Handler.connections) == 2  # a new one, not an error


def test_refusal_is_the_apis_error_and_a_dead_server_is_not_sent(server):
    url = f"http://127.0.0.1:{server.server_port}/api"
    streams = LeanStreams(url, {}, 5)
    with pytest.raises(BadRequest) as err:
        streams.post("/x", {"bad": True}, 10, lambda: None)
    assert err.value.reason == "bad_x"
    port = server.server_port
    server.shutdown()
    server.server_close()
    with pytest.raises(ConnectionFailed) as err:
        LeanStreams(f"http://127.0.0.1:{port}/api", {}, 5).post("/x", {}, 10, lambda: None)
    assert err.value.details["sent"] is False
