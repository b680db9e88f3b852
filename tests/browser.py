"""Headless Chromium for the tests: the system browser (scripts/system-packages.sh), driven by playwright."""

from __future__ import annotations

import os
import shutil

import pytest

# Flags for Chromium on a machine with no display and a closed network (see the env notes in the README).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def playwright_and_chromium(purpose: str):
    """(playwright's sync API, Chromium path); skips where either is absent, but fails under CI, which must have
    them."""
    missing = None
    try:
        from playwright import sync_api
    except ImportError:
        missing = "pip install playwright (it drives the system Chromium; no browser download)"
        sync_api = None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing = "apt-get install -y chromium"
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no browser for {purpose}: {missing}")
    return sync_api, chromium
