#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test against the real Docker engine: the import
# contracts (lint-imports), the pytest suite, then the example notebooks with nbval against a
# real server and real agents.
# Extra arguments go to the first pytest run, e.g. scripts/test.sh -k sessions -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p test-output
# the layers and "no import cycles" (pyproject's [tool.importlinter] contracts)
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -ra "$@"
# the stack the notebooks run against: tests/notebook_stack.py, a plugin (notebooks/ holds
# only notebooks)
PYTHONPATH="tests${PYTHONPATH:+:$PYTHONPATH}" \
  .venv/bin/python -m pytest -p notebook_stack --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/ -p no:cacheprovider -q
