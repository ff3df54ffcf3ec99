#!/usr/bin/env bash
# One command for the benchmarks: set up, then measure the agent against Docker in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
exec .venv/bin/python benchmarks/agent_bench.py "$@"
