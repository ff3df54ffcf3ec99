#!/usr/bin/env bash
# The main job: set up, start a local agent as a daemon on the local Docker engine, and run
# a short demo through it that shows what ran where.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

DATA_DIR=${JUPYTER_REMOTE_AGENT_DATA_DIR:-$HOME/.local/share/jupyter-remote/agent}
LISTEN=${JUPYTER_REMOTE_AGENT_LISTEN:-127.0.0.1:9527}
if .venv/bin/python - "$LISTEN" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=1).close()
except OSError:
    sys.exit(1)
PY
then
  echo "==> an agent already listens on $LISTEN"
else
  .venv/bin/jupyter-remote agent --daemon --listen "$LISTEN" --data-dir "$DATA_DIR"
fi
.venv/bin/python scripts/demo.py "http://$LISTEN"
echo "==> the agent keeps running; stop it with: .venv/bin/jupyter-remote agent stop --data-dir $DATA_DIR"
