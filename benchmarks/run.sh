#!/usr/bin/env bash
# One command for the benchmarks: set up, then measure against the baselines in one run.
#   benchmarks/run.sh          both: the agent against Docker, the server against the agent
#   benchmarks/run.sh agent | server | cells | gateway | transfer | soak | scale | store     only that one
#   (soak is not part of "all": it runs 10 minutes; SOAK_SECONDS=60 for a short try;
#    scale is not either: ~4-5 minutes, every scenario of issue 19 against 200 simulated
#    agents, store_bench's included; `run.sh scale --only hung,panels` picks some;
#    nor store: ~1 minute and ~1.5 GB of disk for two SQLite files of 1M executions)
#   BENCH_TLS=1 benchmarks/run.sh ...   the same with every agent reached over https (a CA made
#   for the run, trusted through REQUESTS_CA_BUNDLE)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
which=${1:-all}
if [ "$which" = all ] || [ "$which" = agent ]; then
  echo "== agent (benchmarks/agent_bench.py)"
  .venv/bin/python benchmarks/agent_bench.py
fi
if [ "$which" = all ] || [ "$which" = server ]; then
  echo "== server extension (benchmarks/server_bench.py)"
  .venv/bin/python benchmarks/server_bench.py
fi
if [ "$which" = all ] || [ "$which" = cells ]; then
  echo "== cells through a real kernel, against ipyparallel and Docker (benchmarks/cell_bench.py)"
  # the peer we compare with, installed by the benchmark's own set-up
  .venv/bin/python -m pip install -q 'ipyparallel>=9' 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python benchmarks/cell_bench.py
fi
if [ "$which" = all ] || [ "$which" = gateway ]; then
  echo "== engine-state gateway and loader (benchmarks/gateway_bench.py)"
  .venv/bin/python benchmarks/gateway_bench.py
fi
if [ "$which" = all ] || [ "$which" = transfer ]; then
  echo "== file transfers, 1 GB in and out of a session, against docker cp (benchmarks/transfer_bench.py)"
  .venv/bin/python benchmarks/transfer_bench.py
fi
if [ "$which" = soak ]; then
  echo "== soak: 10 cells/s through a real server into 4 sessions, retention on (benchmarks/soak_bench.py)"
  .venv/bin/python benchmarks/soak_bench.py
fi
if [ "$which" = scale ]; then
  echo "== server at scale: issue 19's scenarios against 200 simulated agents (benchmarks/scale_bench.py)"
  # bounded: every cell ends within 120 s, a scenario within 300 s, the simulated agents stop
  # after 1,500 s whatever happens
  timeout 1200 .venv/bin/python benchmarks/scale_bench.py "${@:2}"
fi
if [ "$which" = store ]; then
  echo "== the server's SQLite store at 1M executions: retention beside saves (benchmarks/store_bench.py)"
  timeout 600 .venv/bin/python benchmarks/store_bench.py
fi
