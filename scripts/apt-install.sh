#!/usr/bin/env bash
# Install Debian packages that are missing (as root), e.g. scripts/apt-install.sh netcat-openbsd.
# The one place the scripts install system packages, so a fresh machine gets every program
# a script or a test calls. Packages already installed are left alone (fast to re-run).
set -euo pipefail

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "error: missing Debian packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root." >&2
  exit 1
fi
echo "==> installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
