"""Manifest lifecycle in S3: incoming -> processing/<batch> -> processed/<batch> or failed/<batch>.

A manifest is claimed with a conditional write of a lock object, so two runs never process it at once; it is
moved on only after the batch's outputs are written, and its original bytes travel unchanged (server-side copy).
A manifest goes to processed/ when every valid line has its result record and the report is written, otherwise
to failed/; a later re-run of the same batch that completes it moves it from failed/ to processed/.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime

from narration.layout import FAILED, INCOMING, PROCESSED, PROCESSING, BatchLayout, manifest_name, safe_component
from narration.manifests import SUPPORTED_SUFFIXES
from narration.plan import load_plan
from narration.schema import ItemStatus
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


def processing_key(batch_id: str, key: str, incoming_prefix: str = INCOMING) -> str:
    """Where a claimed manifest lives: its path below incoming/ (or its whole key) under processing/<batch>/, so
    two manifests with the same file name in different folders never overwrite each other."""
    relative = key.removeprefix(incoming_prefix)
    return f"{PROCESSING}{safe_component(batch_id)}/{relative.lstrip('/')}"


def _release(storage: Storage, lock: str, batch_id: str) -> None:
    try:
        if storage.get_text(lock) == batch_id:
            storage.delete(lock)
    except KeyError:
        pass


def claim(storage: Storage, batch_id: str, keys: list[str], incoming_prefix: str = INCOMING) -> list[str]:
    """Take manifests for this batch; returns their keys under processing/<batch>/.

    Manifests this batch claimed on an earlier try are taken again; one locked by another run is left alone.
    Keys under incoming/ are moved; any other key is copied, so a manual re-run of an archived manifest keeps it.
    """
    claimed = sorted(storage.list_keys(f"{PROCESSING}{safe_component(batch_id)}/"))
    for key in keys:
        target = processing_key(batch_id, key, incoming_prefix)
        moving = key.startswith(incoming_prefix)
        if target in claimed:
            # An earlier try copied it; finish the move if what sits in incoming/ is still that file (ETags of a
            # multipart upload and of its copy differ, so compare the bytes when they do).
            if moving and storage.exists(key) and (storage.etag(key) == storage.etag(target)
                                                   or storage.get_bytes(key) == storage.get_bytes(target)):
                storage.delete(key)
            continue
        lock = _lock_key(key)
        if not storage.put_if_absent(lock, batch_id.encode()):
            owner = storage.get_text(lock) if storage.exists(lock) else "?"
            if owner != batch_id:
                log.warning("skipping %s: claimed by batch %s", key, owner)
                continue
        try:
            storage.copy(key, target)
        except KeyError:  # another run took and finished it between our listing and our lock
            log.warning("skipping %s: it is no longer there", key)
            _release(storage, lock, batch_id)
            continue
        if moving:
            storage.delete(key)
        claimed.append(target)
        log.info("claimed %s -> %s", key, target)
    return sorted(set(claimed))


def manifest_outcomes(storage: Storage, batch_id: str) -> dict[str, bool]:
    """Claimed manifest key -> True when its batch finished it: it had valid lines, every one of them has its
    result record (the item's outputs are written) and the batch report exists."""
    layout = BatchLayout(batch_id)
    try:
        plan = load_plan(storage, batch_id)
    except KeyError:
        return {}
    report_written = storage.exists(layout.report_csv)
    rows = storage.map(lambda item: storage.get_json_or_none(layout.result(item.item_id)), plan.items)
    unfinished = {item.manifest for item, row in zip(plan.items, rows)
                  if row is None or row.get("status") == ItemStatus.FAILED.value}
    return {summary.key: summary.accepted > 0 and manifest_name(summary.key) not in unfinished and report_written
            for summary in plan.manifests}


def finish(storage: Storage, batch_id: str, outcomes: dict[str, bool]) -> dict[str, str]:
    """Move each claimed manifest to processed/ (True) or failed/ (False) and release its lock.

    ``outcomes`` is keyed by processing/ key (see :func:`manifest_outcomes`); manifests an earlier try left in
    failed/ are judged again, so a re-run that completes the batch moves them to processed/.
    """
    batch = safe_component(batch_id)
    moved = {}
    for prefix in (PROCESSING, FAILED):
        root = f"{prefix}{batch}/"
        for key in sorted(storage.list_keys(root)):
            relative = key[len(root):]
            origin = f"{PROCESSING}{batch}/{relative}"
            target = f"{PROCESSED if outcomes.get(origin, False) else FAILED}{batch}/{relative}"
            if target != key:
                storage.copy(key, target)
                storage.delete(key)
                moved[key] = target
    for lock in list(storage.list_keys(LOCKS)):
        _release(storage, lock, batch_id)
    return moved
