#!/usr/bin/env bash
# One command for the benchmarks: set up, then measure against the baselines in one run.
#   benchmarks/run.sh          both: the agent against Docker, the server against the agent
#   benchmarks/run.sh agent | server | gateway     only that one
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
if [ "$which" = all ] || [ "$which" = gateway ]; then
  echo "== engine-state gateway and loader (benchmarks/gateway_bench.py)"
  .venv/bin/python benchmarks/gateway_bench.py
fi
