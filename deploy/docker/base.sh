#!/usr/bin/env bash
# The base image every mmfeat image builds on, made offline: no registry is reachable from where this runs, so a
# Debian root is debootstrap'd from Debian's own mirror and `docker import`ed. Cached: skipped when the tag exists.
#   deploy/docker/base.sh [tag]      (default mmfeat/base:bookworm)
set -euo pipefail
TAG="${1:-mmfeat/base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG: cached"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
# python3 is 3.11 on bookworm, the project's version; libgomp1 is torch's OpenMP runtime
echo "debootstrap bookworm (minbase) into $ROOT ..."
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1,procps bookworm "$ROOT" "$MIRROR" >/dev/null
# This machine's own trust roots (a TLS-intercepting proxy's CA, say) go in too, so pip and apt in the image builds
# reach what this machine reaches; a machine without any adds none.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null
fi
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
tar -C "$ROOT" -c . | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
echo "base image $TAG: built ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
