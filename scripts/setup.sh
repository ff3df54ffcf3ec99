#!/usr/bin/env bash
# Set up everything jupyter-remote needs on a fresh Debian machine: a venv with the package
# and its test extras, a running Docker engine, and the two local base images.
# Safe and fast to re-run: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${JUPYTER_REMOTE_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating the virtual environment $VENV"
  "$PY" -m venv "$VENV" || {
    echo "error: '$PY -m venv' failed; on Debian install python3-venv" >&2; exit 1; }
fi
stamp="$VENV/.jupyter-remote-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "==> installing jupyter-remote and its test dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[jupyter,dev]'
  touch "$stamp"
fi

scripts/ensure-docker.sh
scripts/build-images.sh

# Every program a test or a script calls, from Debian: chromium for the Lab panel's browser
# test (Playwright drives it and downloads no browser of its own), netcat for the gateway's
# "send a state with nc" test, iproute2 for tests that build hosts in network namespaces,
# systemd for `systemd-analyze verify` of the units in deploy/systemd.
scripts/apt-install.sh chromium netcat-openbsd iproute2 systemd
