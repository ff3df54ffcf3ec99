#!/usr/bin/env bash
# Build the local base images from Debian packages (no registry is reachable):
#   jupyter-remote/busybox:local  a scratch image holding Debian's busybox-static
#   jupyter-remote/python:local   debootstrap --variant=minbase --include=python3 bookworm
#   jupyter-remote/scipy:local    the same with Debian's numpy, pandas and matplotlib
# An image that already exists is left alone, so re-running is fast.
set -euo pipefail

BUSYBOX_IMAGE=jupyter-remote/busybox:local
PYTHON_IMAGE=jupyter-remote/python:local
SCIPY_IMAGE=jupyter-remote/scipy:local
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

# debootstrap_image IMAGE PACKAGES: a minbase bookworm with those packages, as one layer.
debootstrap_image() {
  local image=$1 packages=$2 root="$work/$(echo "$1" | tr '/:' '__')"
  echo "==> building $image with debootstrap from $MIRROR ($packages)"
  "$(dirname "$0")/apt-install.sh" debootstrap
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log" >&2; exit 1; }
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  tar -C "$root" -c . | docker import --change 'CMD ["python3"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$image" >/dev/null
  rm -rf "$root"
}

have_image "$PYTHON_IMAGE" || debootstrap_image "$PYTHON_IMAGE" python3
have_image "$SCIPY_IMAGE" \
  || debootstrap_image "$SCIPY_IMAGE" python3,python3-numpy,python3-pandas,python3-matplotlib

docker run --rm --network none "$BUSYBOX_IMAGE" sh -c true \
  || { echo "error: $BUSYBOX_IMAGE does not run; remove it and re-run" >&2; exit 1; }
docker run --rm --network none "$PYTHON_IMAGE" python3 -c pass \
  || { echo "error: $PYTHON_IMAGE does not run; remove it and re-run" >&2; exit 1; }
docker run --rm --network none "$SCIPY_IMAGE" python3 -c 'import numpy, pandas, matplotlib' \
  || { echo "error: $SCIPY_IMAGE does not run; remove it and re-run" >&2; exit 1; }
echo "==> images ready: $BUSYBOX_IMAGE $PYTHON_IMAGE $SCIPY_IMAGE"
