#!/usr/bin/env bash
# Print the Debian mirror this machine's apt uses (so debootstrap works behind a company
# mirror too). JUPYTER_REMOTE_DEBIAN_MIRROR overrides; APT_SOURCES_DIR is for tests.
# Reads both one-line (sources.list, *.list) and deb822 (*.sources) entries and takes the
# first `deb` source of the main archive (not -security, not a third-party suite).
set -euo pipefail

if [ -n "${JUPYTER_REMOTE_DEBIAN_MIRROR:-}" ]; then
  echo "$JUPYTER_REMOTE_DEBIAN_MIRROR"
  exit 0
fi
dir=${APT_SOURCES_DIR:-/etc/apt}
files=()
[ -f "$dir/sources.list" ] && files+=("$dir/sources.list")
for f in "$dir"/sources.list.d/*.list "$dir"/sources.list.d/*.sources; do
  [ -f "$f" ] && files+=("$f")
done

mirror=$(awk '
  function pick(uri, suites) {
    if (!found && uri != "" && suites ~ /(^| )(bookworm|stable|trixie|bullseye|sid|unstable)( |$)/) {
      sub(/\/+$/, "", uri); print uri; found = 1
    }
  }
  function flush() {                              # end of a deb822 stanza
    if (types ~ /(^|[ \t])deb([ \t]|$)/) pick(uris, suites)
    types = ""; uris = ""; suites = ""
  }
  FNR == 1 { flush() }
  /^[ \t]*#/ { next }
  /^deb[ \t]/ {                                   # one-line form: deb [opts] URI SUITE ...
    n = split($0, w, /[ \t]+/); i = 2
    if (w[i] ~ /^\[/) { while (i <= n && w[i] !~ /\]$/) i++; i++ }
    pick(w[i], w[i + 1]); next
  }
  /^Types:/  { types = $0 }
  /^URIs:/   { uris = $2 }
  /^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites) }
  /^[ \t]*$/ { flush() }
  END        { flush() }
' "${files[@]}" 2>/dev/null || true)

echo "${mirror:-http://deb.debian.org/debian}"
