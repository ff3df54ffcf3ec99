"""Properties of the datagram check and of the loader's bad-line pass (Hypothesis, pure logic)."""

from __future__ import annotations

import gzip
import json
import logging

import pyarrow as pa
import pyarrow.json as pj
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_remote.gateway.salvage import surely_bad
from jupyter_remote.gateway.states import (
    INT64_MAX,
    MAX_DEPTH,
    REASONS,
    BadState,
    log_line,
    parse_state,
)
from jupyter_remote.kernel.engine_states import SCHEMA, load_engine_states

OPTIONS = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
GOOD = {
    "engine_id": "e1",
    "timestamp_ms": 1732000000000,
    "latency_pred_ms": 100.0,
    "scheduling_mode": "latency_optimized",
    "pending_tokens_total": 10,
    "kv_cache_free_blocks": 100,
    "kv_cache_total_blocks": 1000,
    "engine_capacity": 1000.0,
}


def _refuse(name):
    raise ValueError(name)


def strict_loads(line: bytes):
    """Standard JSON only: what any reader of the log may rely on."""
    return json.loads(line.decode("utf-8"), parse_constant=_refuse)


def pyarrow_reads(line: bytes) -> bool:
    try:
        pj.read_json(pa.BufferReader(line), parse_options=OPTIONS).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def check(data: bytes) -> None:
    """The property: a refusal with a named reason, or a state the log can hold."""
    try:
        state = parse_state(data)
    except BadState as exc:
        assert exc.reason in REASONS
        return
    line = log_line(data, state)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert strict_loads(line) == state
    assert 0 <= state["timestamp_ms"] <= INT64_MAX
    assert 0 <= state["kv_cache_free_blocks"] <= state["kv_cache_total_blocks"] <= INT64_MAX
    assert state["engine_id"].isprintable() and state["scheduling_mode"].isprintable()
    assert pyarrow_reads(line)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_any_bytes_are_a_loggable_state_or_a_counted_refusal(data):
    check(data)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(sorted(GOOD)), json_values, max_size=8),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    st.booleans(),
)
def test_states_with_any_values_are_loggable_or_refused(fields, extra, bom):
    """Near-valid states: the declared fields replaced by any JSON value (NaN, Infinity,
    big integers, lone surrogates, nesting), unknown fields added, a BOM in front."""
    body = json.dumps({**GOOD, **fields, **extra}).encode("utf-8", "surrogatepass")
    check(b"\xef\xbb\xbf" + body if bom else body)


@given(st.integers(min_value=MAX_DEPTH + 1, max_value=2000), st.sampled_from("[{"))
def test_deep_nesting_is_refused_without_recursing(depth, bracket):
    close = "]" if bracket == "[" else "}"
    inner = bracket + ('"k":' if bracket == "{" else "")
    body = json.dumps(GOOD)[:-1] + ', "x": ' + inner * (depth - 1) + "[]" + close * (depth - 1)
    with pytest.raises(BadState) as refused:
        parse_state(body.encode()[:4096])
    assert refused.value.reason in ("too_deep", "not_json")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([f.name for f in SCHEMA] + ["x"]), json_values))
def test_a_line_the_loader_calls_bad_is_one_pyarrow_cannot_read(row):
    line = json.dumps(row).encode("utf-8", "surrogatepass")
    if surely_bad(line, SCHEMA):
        assert not pyarrow_reads(line)


BAD_LINES = [
    b'{"engine_id":"e9","timestamp_ms":9223372036854775808}',  # past int64
    b'{"engine_id":"\\ud800","timestamp_ms":5}',  # lone surrogate
    b'\xef\xbb\xbf{"engine_id":"bom","timestamp_ms":5}',  # BOM
    b'{"engine_id":"e9","latency_pred_ms":1e400}',  # past a double
    b'{"engine_id":"e9","timestamp_ms":1.5}',  # float in an int64 column
    b'{"engine_id":"\xff\xfe","timestamp_ms":5}',  # not UTF-8 in a string column
    b'{"engine_id":"e9","engine_id":"e10"}',  # a column twice
    b'{"engine_id":"trunc',  # a torn last write
    b"[1, 2]",
]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.integers(0, len(BAD_LINES) - 1))
def test_a_log_with_bad_lines_loads_every_good_line(tmp_path, pattern, first_bad):
    """Good and bad lines in any order: the good ones load in order, the bad ones are counted."""
    lines, good = [], []
    for i, is_good in enumerate(pattern):
        if is_good:
            lines.append(json.dumps({**GOOD, "timestamp_ms": i}).encode())
            good.append(i)
        else:
            lines.append(BAD_LINES[(first_bad + i) % len(BAD_LINES)])
    path = tmp_path / f"states-{len(pattern)}-{first_bad}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    df = load_engine_states(str(path))
    assert list(df["timestamp_ms"]) == good
    assert df.attrs["skipped_lines"] == len(pattern) - len(good)
    assert str(df["timestamp_ms"].dtype) == "int64" and str(df["engine_id"].dtype) == "string"


def test_a_big_gzipped_log_with_a_few_bad_lines_is_read_around_them(tmp_path, caplog):
    """Past the halving size (256 KiB), in a rotated .gz file, warned about once per change."""
    rows = [json.dumps({**GOOD, "timestamp_ms": i}).encode() for i in range(20_000)]
    for at in (3, 9_999, 19_999):
        rows[at] = BAD_LINES[at % len(BAD_LINES)]
    path = tmp_path / "states.jsonl"
    (tmp_path / "states.jsonl.1.gz").write_bytes(gzip.compress(b"\n".join(rows) + b"\n"))
    path.write_bytes(json.dumps({**GOOD, "timestamp_ms": 50_000}).encode() + b"\n")
    with caplog.at_level(logging.WARNING, logger="jupyter_remote.kernel.engine_states"):
        df = load_engine_states(str(path))
        again = load_engine_states(str(path))
    assert len(df) == 19_998 and df.attrs["skipped_lines"] == 3
    assert list(df["timestamp_ms"][:4]) == [0, 1, 2, 4] and df["timestamp_ms"].iloc[-1] == 50_000
    assert len(again) == len(df)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [f"engine-state log {tmp_path}/states.jsonl.1.gz: skipped 3 bad line(s)"]
