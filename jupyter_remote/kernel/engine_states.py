"""Engine states from the gateway's JSONL log (and its rotated files) into pandas, typed.

pandas' own JSON reader takes ~11 s and 2 GB for 1M states and turns timestamp_ms into
datetimes; pyarrow's reader takes ~1.2 s and keeps the declared types, so it is used here.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from jupyter_remote.gateway.salvage import read_good_lines

SCHEMA = pa.schema(
    [
        ("engine_id", pa.string()),
        ("timestamp_ms", pa.int64()),
        ("latency_pred_ms", pa.float64()),
        ("scheduling_mode", pa.string()),
        ("pending_tokens_total", pa.int64()),
        ("kv_cache_free_blocks", pa.int64()),
        ("kv_cache_total_blocks", pa.int64()),
        ("engine_capacity", pa.float64()),
    ]
)
_ROTATED = re.compile(r"\.(\d+)(\.gz)?$")
log = logging.getLogger("jupyter_remote.kernel.engine_states")


def log_files(path: str) -> list[str]:
    """The log and its rotated files, oldest first: path.N[.gz] ... path.1[.gz], path."""
    rotated = [p for p in glob.glob(f"{glob.escape(path)}.*") if _ROTATED.search(p[len(path) :])]
    rotated.sort(key=lambda p: -int(_ROTATED.search(p[len(path) :]).group(1)))
    return rotated + ([path] if os.path.exists(path) else [])


_OPTIONS = pj.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
# path -> bad lines last warned about: the widget reloads every second, warn once per change
_warned: dict[str, int] = {}


def _parse(source) -> pa.Table:
    table = pj.read_json(source, parse_options=_OPTIONS)
    table.validate(full=True)  # pyarrow lets invalid UTF-8 into string columns
    return table


def _starts_with_an_object(path: str, gz: bool) -> bool:
    """pyarrow crashes the process on a file whose only line is `null` (26.0.1): such a
    file goes the careful way, line by line."""
    with pa.input_stream(path, compression="gzip" if gz else None) as stream:
        head = stream.read(4096).lstrip()
    return not head or head.startswith(b"{")


def _read(path: str) -> tuple[list[pa.Table], int]:
    """One file's tables and its count of bad lines: pyarrow reads a clean file in one go
    (from the path, with both cores); a file with bad lines is read again around them."""
    gz = path.endswith(".gz")
    try:
        if not _starts_with_an_object(path, gz):
            raise pa.ArrowInvalid("the first line is not a JSON object")
        if not gz:
            return [_parse(path)], 0
        with pa.input_stream(path, compression="gzip") as stream:
            return [_parse(stream)], 0
    except pa.ArrowInvalid:
        pass
    with pa.input_stream(path, compression="gzip" if gz else None) as stream:
        data = stream.read()
    tables, bad = read_good_lines(data, lambda buf: _parse(pa.BufferReader(buf)), SCHEMA)
    if bad and _warned.get(path) != bad:
        log.warning("engine-state log %s: skipped %d bad line(s)", path, bad)
    _warned[path] = bad
    return tables, bad


def load_engine_states(
    path: str,
    since: int | None = None,
    until: int | None = None,
    engines: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Every logged state (rotated files too, plain or gz) as a DataFrame with the declared
    types: since/until bound timestamp_ms (inclusive), engines picks engine ids. Lines that
    cannot be read are skipped: df.attrs["skipped_lines"] counts them, and each file with
    some is named in one warning."""
    files = log_files(path)
    if not files:
        raise FileNotFoundError(f"no engine-state log at {path} (nor rotated files)")
    tables, skipped = [], 0
    for f in files:
        if os.path.getsize(f):
            read, bad = _read(f)
            tables += [t for t in read if t.num_rows]
            skipped += bad
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    mask = None
    for cond in (
        pc.greater_equal(table["timestamp_ms"], since) if since is not None else None,
        pc.less_equal(table["timestamp_ms"], until) if until is not None else None,
        pc.is_in(table["engine_id"], value_set=pa.array(list(engines), pa.string()))
        if engines is not None
        else None,
    ):
        if cond is not None:
            mask = cond if mask is None else pc.and_(mask, cond)
    if mask is not None:
        table = table.filter(mask)
    df = table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
    df.attrs["skipped_lines"] = skipped
    return df


def latest_engine_states(
    df: pd.DataFrame, stale_threshold_ms: int = 2000, now: int | None = None
) -> pd.DataFrame:
    """One row per engine (its newest state) with age_ms, stale and kv_cache_utilization."""
    now = int(time.time() * 1000) if now is None else now
    latest = (
        df.sort_values("timestamp_ms", kind="stable")
        .drop_duplicates("engine_id", keep="last")
        .sort_values("engine_id")
        .reset_index(drop=True)
    )
    latest["age_ms"] = now - latest["timestamp_ms"]
    latest["stale"] = latest["age_ms"] > stale_threshold_ms
    total = latest["kv_cache_total_blocks"].astype("float64")
    latest["kv_cache_utilization"] = (1 - latest["kv_cache_free_blocks"] / total).where(total > 0)
    return latest
