#!/usr/bin/env bash
# Make a local Docker engine reachable: install Debian's docker.io when we are root and it
# is missing, start dockerd in the background when it is not running, wait for its socket.
set -euo pipefail

SOCK=/var/run/docker.sock
LOG=${JUPYTER_REMOTE_DOCKERD_LOG:-/var/log/jupyter-remote-dockerd.log}

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if engine_up; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: no Docker engine is reachable and dockerd is not installed;" >&2
    echo "       install Docker (Debian: apt-get install docker.io) or run this as root." >&2
    exit 1
  fi
  "$(dirname "$0")/apt-install.sh" docker.io
fi

if [ "$(id -u)" != 0 ]; then
  echo "error: dockerd is installed but not running, and only root can start it here." >&2
  exit 1
fi

echo "==> starting dockerd in the background (log: $LOG)"
# No docker0 bridge and no iptables rules: containers run with network_mode=none or host.
nohup dockerd --bridge=none --iptables=false >"$LOG" 2>&1 &

for _ in $(seq 1 120); do
  if [ -S "$SOCK" ] && engine_up; then
    echo "==> Docker engine is up"
    exit 0
  fi
  sleep 0.5
done
echo "error: dockerd did not answer on $SOCK within 60 s; see $LOG" >&2
tail -n 20 "$LOG" >&2 || true
exit 1
