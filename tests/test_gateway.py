"""The engine-state gateway with real UDP sockets on loopback, its log, and the loader."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from jupyter_remote.gateway.core import StateGateway
from jupyter_remote.gateway.jsonl import RotatingJsonl
from jupyter_remote.gateway.states import REASONS
from jupyter_remote.kernel.engine_states import latest_engine_states, load_engine_states


def state(engine: str = "e1", ts: int | None = None, **extra) -> dict:
    body = {
        "engine_id": engine,
        "timestamp_ms": ts or int(time.time() * 1000),
        "latency_pred_ms": 100.0,
        "scheduling_mode": "latency_optimized",
        "pending_tokens_total": 10,
        "kv_cache_free_blocks": 100,
        "kv_cache_total_blocks": 1000,
        "engine_capacity": 1000.0,
    }
    body.update(extra)
    return body


def send(port: int, payloads, host: str = "127.0.0.1", broadcast: bool = False) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if broadcast:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for p in payloads:
            s.sendto(p if isinstance(p, bytes) else json.dumps(p).encode(), (host, port))


class GatewayProcess:
    """`jupyter-remote gateway` as a user runs it."""

    def __init__(self, tmp_path, *args: str, env: dict | None = None) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log_file = str(tmp_path / "states.jsonl")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_remote",
                "gateway",
                "--port",
                str(self.port),
                "--log-file",
                self.log_file,
                *args,
            ],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.wait_for(lambda: os.path.exists(f"{self.log_file}.stats.json"))

    def stats(self) -> dict:
        with open(f"{self.log_file}.stats.json") as fh:
            return json.load(fh)

    def wait_for(self, check, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError("condition not met")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=20)
        return out


def test_valid_states_land_in_the_log_and_the_table(tmp_path):
    gw = GatewayProcess(tmp_path, "--stale-threshold", "1500")
    now = int(time.time() * 1000)
    send(
        gw.port,
        [
            state("e1", now - 100),
            state("e2", now - 50),
            state("e1", now),
            state("old", now - 60_000),
        ],
    )
    gw.wait_for(lambda: gw.stats()["logged"] == 4)
    out = gw.stop()
    assert "gateway stopped" in out
    df = load_engine_states(gw.log_file)
    assert len(df) == 4 and str(df["timestamp_ms"].dtype) == "int64"
    assert str(df["latency_pred_ms"].dtype) == "float64"
    latest = latest_engine_states(df, stale_threshold_ms=1500, now=now + 10)
    assert list(latest["engine_id"]) == ["e1", "e2", "old"]
    assert list(latest["stale"]) == [False, False, True]
    assert latest.loc[0, "timestamp_ms"] == now
    assert latest.loc[0, "kv_cache_utilization"] == pytest.approx(0.9)
    only = load_engine_states(gw.log_file, since=now - 100, engines=["e1"])
    assert list(only["timestamp_ms"]) == [now - 100, now]


def test_each_kind_of_bad_datagram_is_dropped_and_counted(tmp_path):
    async def scenario():
        log = RotatingJsonl(str(tmp_path / "s.jsonl"))
        gw = StateGateway(bind="127.0.0.1", port=0, log=log).start()
        send(
            gw.port,
            [
                b"x" * 5000,  # too_large
                b"{not json",  # not_json
                b"[1, 2]",  # not_object
                json.dumps({k: v for k, v in state().items() if k != "engine_id"}).encode(),
                state(timestamp_ms="soon"),  # bad_type
                state(pending_tokens_total=True),  # bad_type (a bool is no count)
                state(kv_cache_free_blocks=2000),  # bad_value: free > total
                state("good"),
            ],
        )
        for _ in range(100):
            await asyncio.sleep(0.02)
            if gw.received == 8:
                break
        gw.stop()
        return gw.counters()

    counters = asyncio.run(scenario())
    assert counters["received"] == 8 and counters["logged"] == 1
    assert set(counters["dropped"]) == set(REASONS)  # every reason is reported, 0 or not
    assert {reason: n for reason, n in counters["dropped"].items() if n} == {
        "too_large": 1,
        "not_json": 1,
        "not_object": 1,
        "missing_field": 1,
        "bad_type": 2,
        "bad_value": 1,
    }
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["engine_id"] == "good"


def test_datagrams_the_fuzzer_found_are_refused_by_reason_and_the_log_still_loads(tmp_path):
    """Issue 10: each of these was logged (or escaped as a RecursionError) and then broke
    load_engine_states for the whole file."""
    gw = GatewayProcess(tmp_path)
    good = json.dumps(state("good", 1_000))
    bad = {
        "non_finite": [
            good.replace('"latency_pred_ms": 100.0', '"latency_pred_ms": NaN'),
            good.replace('"engine_capacity": 1000.0', '"engine_capacity": -Infinity'),
            good.replace('"engine_capacity": 1000.0', '"engine_capacity": 1e400'),
        ],
        "out_of_range": [
            good.replace('"pending_tokens_total": 10', f'"pending_tokens_total": {2**63 + 5}'),
            good.replace('"timestamp_ms": 1000', f'"timestamp_ms": {2**63}'),
            good[:-1] + f', "extra": {2**64}}}',
        ],
        "bad_string": [
            good.replace('"good"', '"e\\ud800"'),
            good.replace('"good"', '"tab\\there"'),
        ],
        "too_deep": ["[" * 2000 + "]" * 2000, good[:-1] + ', "x": ' + "[" * 40 + "]" * 40 + "}"],
        "duplicate_key": [good[:-1] + ', "engine_id": "twice"}'],
        "not_utf8": [good.encode("utf-16")],
    }
    payloads = [p if isinstance(p, bytes) else p.encode() for ps in bad.values() for p in ps]
    bom = b"\xef\xbb\xbf" + json.dumps(state("with-bom", 2_000)).encode()
    send(gw.port, [*payloads, bom, good.encode()])
    total = len(payloads) + 2
    gw.wait_for(lambda: gw.stats()["received"] == total)
    out = gw.stop()
    stats = gw.stats()
    assert "Traceback" not in out and "RecursionError" not in out
    assert {r: n for r, n in stats["dropped"].items() if n} == {r: len(p) for r, p in bad.items()}
    assert stats["logged"] == 2 and stats["received"] == stats["logged"] + len(payloads)
    with open(gw.log_file, "rb") as fh:
        assert b"\xef\xbb\xbf" not in fh.read()  # the BOM is stripped, the state kept
    df = load_engine_states(gw.log_file)
    assert sorted(df["engine_id"]) == ["good", "with-bom"] and df.attrs["skipped_lines"] == 0


def test_a_state_sent_with_nc_arrives(tmp_path):
    gw = GatewayProcess(tmp_path)
    payload = json.dumps(state("from-nc"))
    subprocess.run(
        f"printf '%s' '{payload}' | nc -u -w1 127.0.0.1 {gw.port}",
        shell=True,
        check=True,
        timeout=10,
    )
    gw.wait_for(lambda: gw.stats()["logged"] == 1)
    gw.stop()
    assert list(load_engine_states(gw.log_file)["engine_id"]) == ["from-nc"]


def test_rotation_and_sighup_lose_nothing(tmp_path):
    gw = GatewayProcess(tmp_path, "--max-bytes", "4000", "--backups", "50", "--compress")
    send(gw.port, [state(f"e{i % 3}", 1_000 + i) for i in range(100)])
    gw.wait_for(lambda: gw.stats()["logged"] == 100)
    time.sleep(0.3)  # the writer flushes every 100 ms
    moved = f"{gw.log_file}.1.moved"
    os.replace(gw.log_file, moved)  # what logrotate does
    gw.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    send(gw.port, [state("after-hup", 5_000 + i) for i in range(20)])
    gw.wait_for(lambda: gw.stats()["logged"] == 120)
    gw.stop()
    rotated = [f for f in os.listdir(tmp_path) if ".jsonl." in f and f.endswith(".gz")]
    assert rotated, "no gzipped rotated files"
    before = load_engine_states(gw.log_file, until=4_999)
    moved_df = load_engine_states(moved)
    assert len(before) + len(moved_df) == 100
    assert len(load_engine_states(gw.log_file, engines=["after-hup"])) == 20


def test_broadcast_mode_receives_on_loopback(tmp_path):
    gw = GatewayProcess(tmp_path, "--mode", "broadcast", "--bind", "127.255.255.255")
    send(gw.port, [state("bcast")], host="127.255.255.255", broadcast=True)
    gw.wait_for(lambda: gw.stats()["logged"] == 1)
    gw.stop()
    assert list(load_engine_states(gw.log_file)["engine_id"]) == ["bcast"]


def test_elrar_environment_variables_configure_the_gateway(tmp_path):
    gw = GatewayProcess(
        tmp_path,
        env={"VLLM_STATE_GATEWAY_STALE_THRESHOLD": "10", "VLLM_STATE_GATEWAY_ENABLE_LOG": "false"},
    )
    send(gw.port, [state("quiet")])
    gw.wait_for(lambda: gw.stats()["received"] == 1)
    out = gw.stop()
    assert "log off" in out and not os.path.exists(gw.log_file)


def test_engine_state_widget_and_magic_read_a_log(tmp_path):
    from jupyter_remote.kernel.widgets import EngineStateWidget

    path = tmp_path / "states.jsonl"
    now = int(time.time() * 1000)
    lines = [
        state("b-fresh", now, pending_tokens_total=5),
        state("a-stale", now - 60_000, pending_tokens_total=50),
    ]
    path.write_text("".join(json.dumps(s) + "\n" for s in lines))
    widget = EngineStateWidget(str(path), stale_threshold_ms=2000)
    widget.refresh()
    assert [r["engine_id"] for r in widget.rows] == ["a-stale", "b-fresh"]
    assert "1 stale" in widget.summary.value
    table = widget.table_view.value
    assert table.index("a-stale") < table.index("b-fresh")
    assert "color:#c62828'><td>a-stale" in table  # the stale engine is marked
    widget.sort.value, widget.descending.value = "pending_tokens_total", False
    assert widget.table_view.value.index("b-fresh") < widget.table_view.value.index("a-stale")
    widget.close()

    from conftest import ipython_shell

    ip = ipython_shell()
    ip.run_line_magic("load_ext", "jupyter_remote")
    ip.run_line_magic("remote_states", f"--log {path} --sort age_ms")
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="no engine-state log"):
        ip.run_line_magic("remote_states", f"--log {tmp_path}/missing.jsonl")


def test_a_log_whose_first_line_is_null_loads_instead_of_crashing(tmp_path):
    """pyarrow 26 segfaults on a file whose only line is `null`; the loader must not."""
    log_file = tmp_path / "null.jsonl"
    log_file.write_text("null\n" + json.dumps(state("after-null")) + "\n")
    frame = load_engine_states(str(log_file))
    assert list(frame["engine_id"]) == ["after-null"] and frame.attrs["skipped_lines"] == 1
    only = tmp_path / "only-null.jsonl"
    only.write_text("null\n")
    assert len(load_engine_states(str(only))) == 0
