"""Manifest lifecycle in S3: incoming -> processing/<batch> -> processed/, incomplete/ or failed/<batch>.

A manifest is claimed with a conditional write of a lock object, so two runs never process it at once; it is
moved on only after the batch's report is written, and its original bytes travel unchanged (server-side copy).
Where it goes is the report's verdict (``summary.json`` -> ``manifests``), made from the same checked rows as the
report: processed/ when every valid line has its deliverables, incomplete/ when some lack them (the summary lists
which item misses what), failed/ when it had no valid line. A later run of the same batch judges it again from
wherever it is, so a re-run that completes it moves it on to processed/.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from narration.layout import (
    FAILED,
    INCOMING,
    INCOMPLETE,
    PROCESSED,
    PROCESSING,
    BatchLayout,
    manifest_name,
    safe_component,
)
from narration.manifests import SUPPORTED_SUFFIXES
from narration.plan import BatchPlan, load_plan
from narration.storage import Storage

log = logging.getLogger(__name__)
LOCKS = "locks/manifests/"


class ManifestState(str, Enum):
    """Where a claimed manifest is, and what that means (the README's lifecycle table)."""

    PROCESSING = "processing"  # claimed by a batch that has not finished it (running, or a try died)
    PROCESSED = "processed"  # every valid line has its deliverables and the report is written
    INCOMPLETE = "incomplete"  # some valid line lacks a deliverable; summary.json says which and what
    FAILED = "failed"  # no valid line: the manifest itself must be fixed (the quarantine says why)


STATE_PREFIXES = {ManifestState.PROCESSING: PROCESSING, ManifestState.PROCESSED: PROCESSED,
                  ManifestState.INCOMPLETE: INCOMPLETE, ManifestState.FAILED: FAILED}


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


@dataclass
class Claim:
    """What :func:`claim_manifests` took, and what it left alone because another batch holds it."""

    claimed: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)  # manifest key -> the batch whose lock holds it


def holder(storage: Storage, key: str) -> str | None:
    """The batch whose lock holds manifest ``key``, or None when none does."""
    try:
        return storage.get_text(_lock_key(key))
    except KeyError:
        return None


def claim(storage: Storage, batch_id: str, keys: list[str], incoming_prefix: str = INCOMING) -> list[str]:
    """Take manifests for this batch; returns their keys under processing/<batch>/ (see :func:`claim_manifests`)."""
    return claim_manifests(storage, batch_id, keys, incoming_prefix).claimed


def claim_manifests(storage: Storage, batch_id: str, keys: list[str], incoming_prefix: str = INCOMING) -> Claim:
    """Take manifests for this batch: their keys under processing/<batch>/, and those another batch holds.

    Manifests this batch claimed on an earlier try are taken again; one locked by another run is left alone.
    Keys under incoming/ are moved; any other key is copied, so a manual re-run of an archived manifest keeps it.
    """
    result = Claim()
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
            owner = holder(storage, key) or "?"
            if owner != batch_id:
                log.warning("skipping %s: claimed by batch %s (lock %s)", key, owner, storage.uri(lock))
                result.held[key] = owner
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
    result.claimed = sorted(set(claimed))
    return result


def missing_deliverables(row, formats: Iterable[str]) -> list[str]:
    """What a checked report row lacks of its deliverables: its audio and, unless the batch asked for audio only
    (no formats), each requested timing/subtitle file (json and csv carry the word timings)."""
    return [kind for kind in ("audio", *formats) if not getattr(row, f"{kind}_key", None)]


def manifest_states(plan: BatchPlan, rows: Iterable) -> dict[str, dict]:
    """Processing key -> its verdict from the report's checked rows: state, valid lines, delivered lines and,
    per item that lacks something, what it lacks."""
    missing: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        if row.item_id is not None:
            lacking = missing_deliverables(row, plan.options.formats)
            if lacking:
                missing.setdefault(row.manifest, {})[row.item_id] = lacking
    verdicts = {}
    for summary in plan.manifests:
        lacking = missing.get(manifest_name(summary.key), {})
        if summary.accepted == 0:
            state = ManifestState.FAILED
        else:
            state = ManifestState.INCOMPLETE if lacking else ManifestState.PROCESSED
        verdicts[summary.key] = {"state": state.value, "valid_lines": summary.accepted,
                                 "delivered": summary.accepted - len(lacking), "missing": lacking}
    return verdicts


def manifest_outcomes(storage: Storage, batch_id: str) -> dict[str, str]:
    """Claimed manifest key -> the state it moves to: the verdict of this batch's report (summary.json). Without
    a report every manifest with valid lines is incomplete (nothing vouches for its outputs)."""
    layout = BatchLayout(batch_id)
    try:
        plan = load_plan(storage, batch_id)
    except KeyError:
        return {}
    summary = storage.get_json_or_none(layout.summary) or {}
    verdicts = summary.get("manifests") or {}
    outcomes = {}
    for manifest in plan.manifests:
        if manifest.key in verdicts:
            outcomes[manifest.key] = verdicts[manifest.key]["state"]
        else:
            outcomes[manifest.key] = (ManifestState.FAILED if manifest.accepted == 0
                                      else ManifestState.INCOMPLETE).value
            log.warning("%s: no report verdict (the report was not written): %s", manifest.key,
                        outcomes[manifest.key])
    return outcomes


def finish(storage: Storage, batch_id: str, outcomes: dict[str, str]) -> dict[str, str]:
    """Move each of this batch's manifests to the prefix of its state and release the batch's locks.

    ``outcomes`` is keyed by processing/ key (see :func:`manifest_outcomes`); a manifest it does not name is
    incomplete. Manifests an earlier try moved on are judged again, so a re-run that completes the batch moves
    them to processed/. Returns source -> destination of every move.
    """
    batch = safe_component(batch_id)
    moved = {}
    for prefix in STATE_PREFIXES.values():
        root = f"{prefix}{batch}/"
        for key in sorted(storage.list_keys(root)):
            relative = key[len(root):]
            origin = f"{PROCESSING}{batch}/{relative}"
            state = ManifestState(outcomes.get(origin, ManifestState.INCOMPLETE))
            target = f"{STATE_PREFIXES[state]}{batch}/{relative}"
            if target != key:
                storage.copy(key, target)
                storage.delete(key)
                moved[key] = target
                log.info("%s -> %s (%s)", key, target, state.value)
    for lock in list(storage.list_keys(LOCKS)):
        _release(storage, lock, batch_id)
    return moved
