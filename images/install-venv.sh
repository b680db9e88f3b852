#!/bin/sh
# Build-stage helper shared by the worker Dockerfiles: create /opt/venv and pip-install the project into it.
# Usage: install-venv.sh EXTRAS CONSTRAINTS [--system-site-packages]
# NLTK_PACKAGES (e.g. punkt_tab): NLTK data fetched into /opt/venv/share/nltk_data (on NLTK's default path) when
# the network allows; a failed fetch only warns, since the whisperx aligner makes an offline stand-in at run time.
# Certificates in /tmp/extra-ca (images/extra-ca/*.pem|*.crt) are added to pip's trust for this build only.
set -eu
extras=$1
export PIP_CONSTRAINT=$2   # the env var (unlike --constraint) also pins the isolated build backend
shift 2

python3 -m venv "$@" /opt/venv
extra_certs=$(find /tmp/extra-ca -type f \( -name '*.pem' -o -name '*.crt' \) 2>/dev/null | sort)
if [ -n "$extra_certs" ]; then
    bundle=/tmp/pip-ca-bundle.pem
    cat "$(/opt/venv/bin/python -c 'import pip._vendor.certifi as c; print(c.where())')" $extra_certs > "$bundle"
    export PIP_CERT="$bundle"
    echo "install-venv: trusting $(echo "$extra_certs" | wc -l) extra CA file(s) for this build"
fi
/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --progress-bar off "/src[$extras]"
# With --system-site-packages the base image's own packages are checked too: report, don't fail, there.
if [ "$#" -eq 0 ]; then /opt/venv/bin/pip check; else /opt/venv/bin/pip check || echo "install-venv: pip check warnings above"; fi
/opt/venv/bin/narration --help >/dev/null
if [ -n "${NLTK_PACKAGES:-}" ]; then
    mkdir -p /opt/venv/share/nltk_data
    # nltk's downloader reports network errors but still exits 0: check for the files instead.
    if [ -n "${PIP_CERT:-}" ]; then export SSL_CERT_FILE="$PIP_CERT"; fi
    timeout 180 /opt/venv/bin/python -m nltk.downloader -q \
        -d /opt/venv/share/nltk_data $NLTK_PACKAGES || true
    for package in $NLTK_PACKAGES; do
        if [ -z "$(find /opt/venv/share/nltk_data -maxdepth 2 -name "$package*" 2>/dev/null)" ]; then
            echo "install-venv: WARNING: NLTK $package not downloaded (no network?); an offline stand-in is used"
        fi
    done
fi
rm -f /tmp/pip-ca-bundle.pem
