"""Manifest lifecycle in S3: incoming -> processing/<batch> -> processed/<batch> or failed/<batch>.

A manifest is claimed with a conditional write of a lock object, so two runs never process it at once; it is
moved on only after the batch's outputs are written, and its original bytes travel unchanged (server-side copy).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from datetime import datetime

from narration.layout import FAILED, INCOMING, PROCESSED, PROCESSING, safe_component
from narration.manifests import SUPPORTED_SUFFIXES
from narration.storage import Storage

log = logging.getLogger(__name__)
LOCKS = "locks/manifests/"


def batch_id_for(run_id: str, run_after: datetime) -> str:
    """A stable, key-safe batch id for a DAG run: retries of the same run share it."""
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:8]
    kind = re.sub(r"[^a-z]+", "", run_id.split("__")[0].lower())[:12] or "run"
    return f"{run_after:%Y%m%dT%H%M%S}-{kind}-{digest}"


def _lock_key(key: str) -> str:
    return LOCKS + hashlib.sha1(key.encode()).hexdigest() + ".lock"


def discover(storage: Storage, selector: str | None, incoming_prefix: str = INCOMING) -> list[str]:
    """Manifest keys a run should take: ``selector`` (a key or a prefix) or everything under incoming/."""
    prefix = selector or incoming_prefix
    keys = [k for k in storage.list_keys(prefix) if k.lower().endswith(SUPPORTED_SUFFIXES)]
    if selector and not keys and storage.exists(selector):
        keys = [selector]
    return sorted(keys)


def processing_key(batch_id: str, key: str) -> str:
    return f"{PROCESSING}{safe_component(batch_id)}/{posixpath.basename(key)}"


def claim(storage: Storage, batch_id: str, keys: list[str], incoming_prefix: str = INCOMING) -> list[str]:
    """Take manifests for this batch; returns their keys under processing/<batch>/.

    Manifests this batch claimed on an earlier try are taken again; one locked by another run is left alone.
    Keys under incoming/ are moved; any other key is copied, so a manual re-run of an archived manifest keeps it.
    """
    claimed = sorted(storage.list_keys(f"{PROCESSING}{safe_component(batch_id)}/"))
    for key in keys:
        target = processing_key(batch_id, key)
        if target in claimed:
            continue
        if not storage.put_if_absent(_lock_key(key), batch_id.encode()):
            owner = storage.get_text(_lock_key(key)) if storage.exists(_lock_key(key)) else "?"
            if owner != batch_id:
                log.warning("skipping %s: claimed by batch %s", key, owner)
                continue
        storage.copy(key, target)
        if key.startswith(incoming_prefix):
            storage.delete(key)
        claimed.append(target)
        log.info("claimed %s -> %s", key, target)
    return sorted(set(claimed))


def finish(storage: Storage, batch_id: str, outcomes: dict[str, bool]) -> dict[str, str]:
    """Move each claimed manifest to processed/ (True) or failed/ (False) and release its lock."""
    moved = {}
    for key in sorted(storage.list_keys(f"{PROCESSING}{safe_component(batch_id)}/")):
        ok = outcomes.get(key, False)
        target = f"{PROCESSED if ok else FAILED}{safe_component(batch_id)}/{posixpath.basename(key)}"
        storage.copy(key, target)
        storage.delete(key)
        moved[key] = target
    for lock in list(storage.list_keys(LOCKS)):
        try:
            if storage.get_text(lock) == batch_id:
                storage.delete(lock)
        except KeyError:
            continue
    return moved
