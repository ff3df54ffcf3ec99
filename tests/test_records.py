"""Event records (protocol/records.py): output as sized records, everything else JSON lines.

Pure logic: bytes in, records and events out, wherever the stream is cut."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_remote.protocol import records
from jupyter_remote.protocol.rules import incomplete_tail
from jupyter_remote.runner.wire import encode

# output that looks like record heads, JSON, exit events and torn characters
TRICKY = st.sampled_from(
    [
        b'{"event":"stdout","size":5}\n',
        b'{"event":"exit","returncode":0}\n',
        b"\n",
        b'"\\',
        "é€😀".encode(),
        b"\x00\x1b\x7f",
    ]
)
OUTPUT = st.lists(st.one_of(TRICKY, st.binary(max_size=40)), max_size=5).map(b"".join)
PLAIN = st.one_of(
    st.builds(lambda pid: {"event": "started", "pid": pid}, st.integers(0, 99999)),
    st.builds(lambda m: {"event": "notice", "message": m}, st.text(max_size=30)),
    st.builds(lambda d: {"event": "stdout", "data": d}, st.text(max_size=30)),  # old form
)


def record_of(item) -> bytes:
    if isinstance(item, tuple):
        return records.output_record(*item)
    return encode(item)


def expected_event(item) -> dict:
    if isinstance(item, tuple):
        return {"event": item[0], "data": item[1].decode("utf-8", "replace")}
    return item


STREAMS = st.lists(
    st.one_of(st.tuples(st.sampled_from(["stdout", "stderr"]), OUTPUT.filter(bool)), PLAIN),
    max_size=12,
)
EXIT = {"event": "exit", "returncode": 3, "status": "failed", "message": None}


@settings(max_examples=300, deadline=None)
@given(STREAMS, st.lists(st.integers(1, 60), min_size=1, max_size=8))
def test_a_splitter_gives_whole_records_wherever_the_stream_is_cut(items, cuts):
    body = b"".join(record_of(i) for i in items) + encode(EXIT) + b"after the exit\n"
    splitter, out, at, n = records.Splitter(), [], 0, 0
    while at < len(body):
        size = cuts[n % len(cuts)]
        whole = splitter.feed(body[at : at + size])
        if whole:
            assert records.whole_length(whole) == len(whole)  # never half a record
            out.append(whole)
        at, n = at + size, n + 1
    copied = b"".join(out)
    assert copied == body[: body.index(b"after the exit")]  # up to the exit, nothing after
    assert splitter.exit == EXIT
    assert list(records.events(copied)) == [*map(expected_event, items), EXIT]
    ndjson = records.to_ndjson(copied)
    assert [json.loads(line) for line in ndjson.splitlines()] == list(records.events(copied))


@given(STREAMS, st.integers(0, 400))
def test_a_torn_tail_is_not_a_record(items, cut):
    body = b"".join(record_of(i) for i in items)
    torn = body[: min(cut, len(body))]
    whole = records.whole_length(torn)
    assert body.startswith(torn[:whole]) and records.whole_length(torn[:whole]) == whole
    ends = {0}
    for item in items:
        ends.add(max(ends) + len(record_of(item)))
    assert whole == max(e for e in ends if e <= len(torn))
    fh = io.BytesIO(torn)
    assert records.scan_file(fh)[0] == whole


def test_scan_reads_heads_and_knows_the_last_plain_record(tmp_path):
    body = (
        encode({"event": "started", "pid": 1})
        + records.output_record("stdout", b"x" * 100_000)
        + encode(EXIT)
    )
    path = tmp_path / "log"
    path.write_bytes(body)
    with open(path, "rb") as fh:
        assert records.scan_file(fh) == (len(body), encode(EXIT))
    first = len(encode({"event": "started", "pid": 1}))
    assert records.starts_record(str(path), 0) and records.starts_record(str(path), first)
    assert records.starts_record(str(path), len(body))
    assert not records.starts_record(str(path), first + 30)  # inside the output
    assert not records.starts_record(str(path), len(body) + 1)  # past the end


@pytest.mark.parametrize(
    "head",
    [
        b'{"event":"stdout","size":x}\n',
        b'{"event":"stdout","size":-1}\n',
        b'{"event":"stderr","size":3]\n',
    ],
)
def test_a_bad_record_head_is_an_error_not_a_guess(head):
    with pytest.raises(records.BadRecord):
        records.Splitter().feed(head + b"abc\n")
    with pytest.raises(records.BadRecord):
        list(records.events(head + b"abc\n"))


def test_an_output_record_must_end_where_its_head_says():
    with pytest.raises(records.BadRecord):
        records.Splitter().feed(b'{"event":"stdout","size":2}\nabc\n')


@given(st.text(max_size=20), st.integers(0, 80))
def test_incomplete_tail_keeps_characters_whole(text, cut):
    data = text.encode()[:cut]
    tail = incomplete_tail(data)
    assert 0 <= tail <= 3
    head = data[: len(data) - tail]
    assert head.decode() == text.encode()[: len(head)].decode()  # whole characters only
    rest = text.encode()[len(head) :]
    assert rest.decode() == text[len(head.decode()) :]
