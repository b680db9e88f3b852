#!/usr/bin/env bash
# Build a local Debian base image (python3 + venv) with debootstrap, for machines that reach no image registry.
# Usage: images/build-base.sh [TAG]   (default narration-base:bookworm; FORCE=1 rebuilds an existing tag)
# The result stands in for python:3.11-slim-bookworm / the CUDA bases: docker build --build-arg BASE_IMAGE=TAG
set -euo pipefail

TAG=${1:-${NARRATION_BASE_IMAGE:-narration-base:bookworm}}
SUITE=${DEBIAN_SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=${BASE_PACKAGES:-python3,python3-venv,ca-certificates}

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "build-base: $TAG already exists (FORCE=1 rebuilds it)"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null
fi

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/narration-base.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT

start=$(date +%s)
echo "build-base: debootstrap $SUITE ($PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -n 40 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
# Keep the image small: package caches and lists are rebuilt by apt-get update when needed.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* \
       "$ROOTFS"/usr/share/man/*

tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE with $PACKAGES" - "$TAG" >/dev/null
echo "build-base: $TAG built in $(( $(date +%s) - start )) s ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
