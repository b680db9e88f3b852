#!/usr/bin/env bash
# Debian packages the test stages use: ffmpeg + a font (ffmpeg/libass parse and render the subtitle files),
# chromium (the UI screenshot), postgresql (metadata DB) and redis-server (Celery broker) for the distributed stage
# and the orchestration benchmark, and bible-kjv (a public-domain text) for the long-form benchmark. Installs only
# what is missing, and only as root; otherwise says what to install.

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
command -v chromium >/dev/null || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v bible >/dev/null || missing+=(bible-kjv)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "system-packages: please install: ${missing[*]} (the tests that need them skip, saying why)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "system-packages: installed ${missing[*]}"
