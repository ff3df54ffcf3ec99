#!/usr/bin/env bash
# Build the two local base images from Debian packages (no registry is reachable):
#   jupyter-remote/busybox:local  a scratch image holding Debian's busybox-static
#   jupyter-remote/python:local   debootstrap --variant=minbase --include=python3 bookworm
# An image that already exists is left alone, so re-running is fast.
set -euo pipefail

BUSYBOX_IMAGE=jupyter-remote/busybox:local
PYTHON_IMAGE=jupyter-remote/python:local
# The mirror apt is configured with (JUPYTER_REMOTE_DEBIAN_MIRROR overrides).
MIRROR=$("$(dirname "$0")/debian-mirror.sh")

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! have_image "$BUSYBOX_IMAGE"; then
  echo "==> building $BUSYBOX_IMAGE from Debian's busybox-static"
  # Debian's busybox-static: a dynamically linked busybox would not run in a scratch image.
  "$(dirname "$0")/apt-install.sh" busybox-static
  bb=/bin/busybox
  mkdir -p "$work/bb/bin" "$work/bb/tmp" "$work/bb/root"
  cp "$bb" "$work/bb/bin/busybox"
  for applet in $("$bb" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$work/bb/bin/$applet"
  done
  chmod 1777 "$work/bb/tmp"
  # The same as `FROM scratch` + `COPY busybox`: a single layer holding only busybox.
  tar -C "$work/bb" -c . | docker import --change 'CMD ["sh"]' --change 'ENV PATH=/bin' - "$BUSYBOX_IMAGE" >/dev/null
fi

if ! have_image "$PYTHON_IMAGE"; then
  echo "==> building $PYTHON_IMAGE with debootstrap from $MIRROR (about a minute)"
  "$(dirname "$0")/apt-install.sh" debootstrap
  debootstrap --variant=minbase --include=python3 bookworm "$work/py" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work/py/var/cache/apt/archives/"*.deb "$work/py/var/lib/apt/lists/"*
  tar -C "$work/py" -c . | docker import --change 'CMD ["python3"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$PYTHON_IMAGE" >/dev/null
fi
docker run --rm --network none "$BUSYBOX_IMAGE" sh -c true \
  || { echo "error: $BUSYBOX_IMAGE does not run; remove it and re-run" >&2; exit 1; }
docker run --rm --network none "$PYTHON_IMAGE" python3 -c pass \
  || { echo "error: $PYTHON_IMAGE does not run; remove it and re-run" >&2; exit 1; }
echo "==> images ready: $BUSYBOX_IMAGE $PYTHON_IMAGE"
