#!/usr/bin/env bash
# The main job: set up, start a local agent as a daemon on the local Docker engine, and
# start JupyterLab with the extension (the local agent is its default node) on the
# example notebooks; the URL it prints opens the quickstart notebook.
#   scripts/run.sh              JupyterLab on http://127.0.0.1:8888/lab/tree/quickstart.ipynb
#                               (the URL with its token is printed)
#   scripts/run.sh --headless   run the quickstart notebook through a Jupyter server and
#                               print its cells and outputs (for servers and CI)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

DATA_DIR=${JUPYTER_REMOTE_AGENT_DATA_DIR:-$HOME/.local/share/jupyter-remote/agent}
LISTEN=127.0.0.1:9527
PORT=${JUPYTER_PORT:-8888}
STOP=".venv/bin/jupyter-remote agent stop --remove-containers --data-dir $(printf '%q' "$DATA_DIR")"
if .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', 9527), 1)" 2>/dev/null; then
  echo "==> an agent already listens on $LISTEN (one this script started stops with: $STOP)"
else
  .venv/bin/jupyter-remote agent --daemon --listen "$LISTEN" --data-dir "$DATA_DIR"
fi

if [ "${1:-}" = "--headless" ]; then
  status=0
  .venv/bin/python scripts/headless.py notebooks/quickstart.ipynb || status=$?
  echo "==> the agent keeps running for the next run; stop it with: $STOP"
  exit "$status"
fi
echo "==> starting JupyterLab with jupyter-remote; the Remote cells run on the local agent"
echo "    (stop the agent afterwards with: $STOP)"
# the file browser shows the example notebooks; the URL Jupyter prints opens the quickstart
exec .venv/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.port="$PORT" \
  --ServerApp.allow_root=True --ServerApp.open_browser=False \
  --ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/quickstart.ipynb
