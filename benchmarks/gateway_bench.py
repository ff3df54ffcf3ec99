"""The engine-state gateway and loader, against named baselines measured in the same run.

1. Loss at fixed send rates (3 s each) for `jupyter-remote gateway` against a stock asyncio
   DatagramProtocol receiver that parses and writes each state (the baseline); and the
   highest rate the gateway takes with zero loss. Target: zero loss at 50k states/s.
2. Loading 1,000,000 logged states with load_engine_states against pyarrow.json.read_json of
   the same file (target <= 1.2x), with each one's peak memory (fresh processes); and the
   same file with one bad line in the middle (read around it, not failed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

SECONDS = float(os.environ.get("BENCH_SECONDS", "3"))
RATES = [int(r) for r in os.environ.get("BENCH_RATES", "10000,50000,100000").split(",")]
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))

SENDER = r"""
import json, socket, sys, time
port, rate, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
payloads = [json.dumps({"engine_id": f"e{i}", "timestamp_ms": 1732000000000 + i,
    "latency_pred_ms": 100.0, "scheduling_mode": "latency_optimized",
    "pending_tokens_total": 10, "kv_cache_free_blocks": 100, "kv_cache_total_blocks": 1000,
    "engine_capacity": 1000.0}).encode() for i in range(64)]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
addr = ("127.0.0.1", port)
per_tick, tick = max(1, rate // 1000), 0.001
sent, start = 0, time.perf_counter()
while sent < rate * seconds:
    for _ in range(per_tick):
        s.sendto(payloads[sent & 63], addr)
        sent += 1
    wait = start + (sent / rate) - time.perf_counter()
    if wait > 0:
        time.sleep(wait)
print(sent)
"""

BASELINE = r"""
import asyncio, json, signal, sys
port, path = int(sys.argv[1]), sys.argv[2]
class Stock(asyncio.DatagramProtocol):
    received = 0
    def __init__(self): self.out = open(path, "a")
    def datagram_received(self, data, addr):
        state = json.loads(data)
        self.out.write(json.dumps(state) + "\n")
        Stock.received += 1
async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await loop.create_datagram_endpoint(Stock, local_addr=("127.0.0.1", port))
    print("ready", flush=True)
    await stop.wait()
    print(Stock.received, flush=True)
asyncio.run(main())
"""

LOAD = r"""
import resource, sys, time
path, how = sys.argv[1], sys.argv[2]
import pyarrow.json as pj
from jupyter_remote.kernel.engine_states import load_engine_states  # imports are not timed
t0 = time.perf_counter()
skipped = 0
if how == "pyarrow":
    rows = pj.read_json(path).num_rows
else:
    df = load_engine_states(path)
    rows, skipped = len(df), df.attrs["skipped_lines"]
seconds = time.perf_counter() - t0
print(rows, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, skipped)
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port: int, rate: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", SENDER, str(port), str(rate), str(SECONDS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def gateway_loss(rate: int, tmp: str) -> tuple[int, int]:
    port = free_udp_port()
    log = os.path.join(tmp, f"gw-{rate}.jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_remote", "gateway", "--port", str(port), "--log-file", log],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stats = f"{log}.stats.json"
    while not os.path.exists(stats):
        time.sleep(0.05)
    sent = send(port, rate)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    with open(stats) as fh:
        logged = json.load(fh)["logged"]
    return sent, logged


def baseline_loss(rate: int, tmp: str) -> tuple[int, int]:
    port = free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", BASELINE, str(port), os.path.join(tmp, f"base-{rate}.jsonl")],
        stdout=subprocess.PIPE,
        text=True,
    )
    proc.stdout.readline()
    sent = send(port, rate)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    received = int(proc.stdout.readline())
    proc.wait(30)
    return sent, received


def write_states(path: str, rows: int) -> None:
    template = (
        '{{"engine_id":"e{e}","timestamp_ms":{ts},"latency_pred_ms":{lat}.5,'
        '"scheduling_mode":"latency_optimized","pending_tokens_total":{p},'
        '"kv_cache_free_blocks":{f},"kv_cache_total_blocks":1000,'
        '"engine_capacity":1000.0}}\n'
    )
    with open(path, "w") as fh:
        for start in range(0, rows, 10000):
            fh.write(
                "".join(
                    template.format(
                        e=i % 64, ts=1732000000000 + i, lat=i % 300, p=i % 500, f=i % 1000
                    )
                    for i in range(start, min(rows, start + 10000))
                )
            )


def load(path: str, how: str) -> tuple[int, float, float, int]:
    out = subprocess.run(
        [sys.executable, "-c", LOAD, path, how], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), float(out[1]), float(out[2]), int(out[3])


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="jr-gateway-bench-")
    print(f"loss over {SECONDS:g} s per rate (lost = sent - logged/received):")
    zero = 0
    for rate in RATES:
        sent, logged = gateway_loss(rate, tmp)
        bsent, breceived = baseline_loss(rate, tmp)
        lost, blost = sent - logged, bsent - breceived
        if lost == 0:
            zero = max(zero, rate)
        print(
            f"  {rate:>7}/s  gateway lost {lost:>7} of {sent:>7} ({lost / sent:6.2%})   "
            f"stock DatagramProtocol lost {blost:>7} of {bsent:>7} ({blost / bsent:6.2%})"
        )
    print(
        f"  highest tried rate with zero loss: {zero}/s (target: zero loss at 50000/s) "
        f"{'OK' if zero >= 50000 else 'MISSED'}"
    )
    path = os.path.join(tmp, "states.jsonl")
    write_states(path, ROWS)
    runs = {"pyarrow": [], "ours": []}
    for _ in range(3):  # alternate, fresh processes; medians
        for how in ("pyarrow", "ours"):
            runs[how].append(load(path, how))
    rows = runs["ours"][0][0]
    base, base_mem = (sorted(r[i] for r in runs["pyarrow"])[1] for i in (1, 2))
    ours, our_mem = (sorted(r[i] for r in runs["ours"])[1] for i in (1, 2))
    ratio = ours / base
    size = os.path.getsize(path) / 1e6
    print(f"loading {rows} states ({size:.0f} MB), median of 3 fresh processes each:")
    print(f"  pyarrow.json.read_json  {base:6.2f} s  peak RSS {base_mem:6.0f} MB")
    print(
        f"  load_engine_states      {ours:6.2f} s  peak RSS {our_mem:6.0f} MB  "
        f"= {ratio:.2f}x (target <= 1.2x) {'OK' if ratio <= 1.2 else 'MISSED'}"
    )
    bad = os.path.join(tmp, "one-bad-line.jsonl")
    with open(path, "rb") as src, open(bad, "wb") as dst:
        data = src.read()
        middle = data.index(b"\n", len(data) // 2) + 1
        dst.write(data[:middle] + b'{"engine_id":"e1","timestamp_ms":1e400}\n' + data[middle:])
    rows, seconds, mem, skipped = load(bad, "ours")
    print(
        f"  load_engine_states, one bad line in the middle: {seconds:6.2f} s  peak RSS "
        f"{mem:6.0f} MB  ({rows} rows, {skipped} skipped)"
    )


if __name__ == "__main__":
    main()
