#!/usr/bin/env bash
# Install and start a Docker engine on a CI or developer machine (root, no systemd, no registry reachable).
# Idempotent: does nothing when a daemon already answers. Also installs debootstrap for images/build-base.sh.
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/narration-dockerd.log}
# auto: overlay2 when this kernel mounts overlayfs on /var/lib/docker's filesystem (builds ~2x faster, no full
# rootfs copy per layer or container), else vfs, which works anywhere. Set vfs or overlay2 to force one.
DOCKERD_STORAGE_DRIVER=${DOCKERD_STORAGE_DRIVER:-auto}
DOCKERD_DATA_ROOT=${DOCKERD_DATA_ROOT:-/var/lib/docker}
DOCKERD_WAIT_S=${DOCKERD_WAIT_S:-90}

if docker info >/dev/null 2>&1; then
    echo "docker-engine: a daemon already answers ($(docker info --format '{{.ServerVersion}} {{.Driver}}'))"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: no daemon answers and starting one needs root" >&2
    exit 1
fi

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends docker.io debootstrap ca-certificates >/dev/null
fi

overlay_mounts() {
    local probe rc=1
    mkdir -p "$DOCKERD_DATA_ROOT"
    probe=$(mktemp -d "$DOCKERD_DATA_ROOT/.overlay-probe.XXXXXX")
    mkdir "$probe"/{lower,upper,work,merged}
    if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
        "$probe/merged" 2>/dev/null; then
        umount "$probe/merged"
        rc=0
    fi
    rm -rf "$probe"
    return $rc
}

start_dockerd() {  # $1 = storage driver; returns 0 once the daemon answers
    echo "docker-engine: starting dockerd (storage driver $1, log $DOCKERD_LOG)"
    setsid nohup dockerd --iptables=false --storage-driver="$1" --data-root="$DOCKERD_DATA_ROOT" \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq "$DOCKERD_WAIT_S"); do
        if docker info >/dev/null 2>&1; then
            echo "docker-engine: ready ($(docker info --format '{{.ServerVersion}} {{.Driver}}'))"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    echo "docker-engine: dockerd ($1) did not answer; last log lines:" >&2
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    kill "$pid" 2>/dev/null || true
    return 1
}

# --iptables=false: no NAT rules in sandboxes without netfilter; builds and containers use host networking.
if [ "$DOCKERD_STORAGE_DRIVER" != auto ]; then
    start_dockerd "$DOCKERD_STORAGE_DRIVER"
elif overlay_mounts; then
    start_dockerd overlay2 || start_dockerd vfs
else
    start_dockerd vfs
fi
