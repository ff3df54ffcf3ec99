"""NDJSON events out of a streamed answer cut anywhere (pure logic: chunks in, events out)."""

from __future__ import annotations

import json

from jupyter_remote.http.api import HttpApi


class Chunks:
    """Stands in for a requests.Response: only the chunks it hands out matter here."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def iter_content(self, chunk_size=None):
        return iter(self.chunks)

    def close(self) -> None:
        pass


EVENTS = [
    {"event": "started"},
    {"event": "stdout", "data": "x" * 3000 + "\n" + "é"},
    {"event": "stdout", "data": ""},
    {"event": "exit", "returncode": 0},
]


def test_events_come_out_whole_wherever_the_stream_was_cut():
    api = HttpApi("http://127.0.0.1:9")
    body = b"".join(json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in EVENTS)
    body = body.replace(b"\n", b"\n\n", 1)  # a blank line is skipped
    for size in (1, 2, 7, 100, 1000, 4096, len(body)):
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert list(api._events(Chunks(chunks), "test")) == EVENTS, size
    # a last line without its newline is still an event
    assert list(api._events(Chunks([body.rstrip(b"\n")]), "test")) == EVENTS
