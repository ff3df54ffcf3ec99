#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test against the real Docker engine.
# Extra arguments go to pytest, e.g. scripts/test.sh -k sessions -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p test-output
exec .venv/bin/python -m pytest -ra "$@"
