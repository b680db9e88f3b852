"""Batch planning: validate the claimed manifests, quarantine bad lines, and cut the good items into chunks.

A chunk is what one worker invocation processes with one model load; its spec is written to S3 and only its key
travels through XCom.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from narration.layout import BatchLayout, manifest_name
from narration.lexicons import LexiconError, LexiconLibrary
from narration.longform import is_long
from narration.manifests import ManifestError, ValidationContext, parse_manifest
from narration.schema import ChunkSpec, ItemSpec, LineError, RunChoices
from narration.settings import Settings
from narration.storage import Storage

log = logging.getLogger(__name__)


class ChunkRef(BaseModel):
    chunk_id: str
    key: str
    label: str
    item_ids: list[str]
    longform_chars: int = Field(0, description="Characters of the chunk's long items (0 for a chunk of short "
                                "items): its time budget grows with them.")


class ManifestSummary(BaseModel):
    key: str
    lines: int
    accepted: int
    rejected: int
    error: str | None = None


class BatchOptions(RunChoices):
    """The per-run choices a trigger can make (Airflow Params map onto these): how the batch is planned, and the
    choices every chunk spec carries to the steps."""

    voice: str | None = None
    language: str | None = None
    chunk_size: int = Field(Settings.model_fields["chunk_size"].default, ge=1, le=1000)
    force_rerender: bool = False
    lexicons: list[str] = Field(default_factory=list, description="Lexicon names (lexicons/<name>.pls|.csv) for "
                                "every line, searched after each line's own; resolved into the items at planning.")

    def chunk_choices(self) -> dict:
        """What a chunk spec carries of these options."""
        return {**self.model_dump(include=set(RunChoices.model_fields)), "params": {"force": self.force_rerender}}


class BatchPlan(BaseModel):
    batch_id: str
    created_at: str
    options: BatchOptions
    manifests: list[ManifestSummary]
    items: list[ItemSpec]
    quarantined: int
    chunks: list[ChunkRef]
    error: str | None = Field(None, description="Why planning stopped (a malformed or unknown lexicon).")


def chunk_items(items: list[ItemSpec], size: int, settings: Settings | None = None) -> list[list[ItemSpec]]:
    """Short items in chunks of ``size``, in order; then each long item in a chunk of its own, so a programme of
    an hour never holds up the short items that would have shared its chunk."""
    settings = settings or Settings()
    short = [item for item in items if not is_long(item, settings)]
    long = [item for item in items if is_long(item, settings)]
    return [short[i : i + size] for i in range(0, len(short), size)] + [[item] for item in long]


def chunk_label(chunk_id: str, ids: list[str], name_every_item: bool = False) -> str:
    """The UI label of a mapped instance: its chunk and items ("c0000 a..d (4)" or "f0000 a c")."""
    if name_every_item:
        return f"{chunk_id} {' '.join(ids)}"[:250]
    return f"{chunk_id} {ids[0]}" + (f"..{ids[-1]}" if len(ids) > 1 else "") + f" ({len(ids)})"


def write_chunks(storage: Storage, batch_id: str, items: list[ItemSpec], options: BatchOptions, *,
                 fallback: bool = False, settings: Settings | None = None) -> list[ChunkRef]:
    """Cut ``items`` into chunk specs in S3 (``c0000``..., fallback chunks ``f0000``... with every item named in
    their label); returns what the mapped tasks expand over."""
    prefix = "f" if fallback else "c"
    layout = BatchLayout(batch_id)
    chunks = []
    settings = settings or Settings()
    for number, group in enumerate(chunk_items(items, options.chunk_size, settings)):
        chunk_id = f"{prefix}{number:04d}"
        spec = ChunkSpec(batch_id=layout.batch_id, chunk_id=chunk_id, items=group, fallback=fallback,
                         **options.chunk_choices())
        key = storage.put_json(layout.chunk(chunk_id), spec)
        ids = [i.item_id for i in group]
        chunks.append(ChunkRef(chunk_id=chunk_id, key=key, label=chunk_label(chunk_id, ids, fallback),
                               item_ids=ids,
                               longform_chars=sum(len(i.text) for i in group if is_long(i, settings))))
    return chunks


def plan_batch(
    storage: Storage, settings: Settings, batch_id: str, manifest_keys: list[str], options: BatchOptions,
    voices: set[str],
) -> BatchPlan:
    """Validate every manifest line, write quarantine, chunk specs and the plan; returns the plan.

    Raises :class:`ManifestError` after writing the plan when no line of any manifest is valid, and
    :class:`LexiconError` after writing a plan that says why when a lexicon the batch or a line names is malformed
    (or a lexicon the batch names does not exist): every lexicon is read and checked once.
    """
    layout = BatchLayout(batch_id)
    library = LexiconLibrary(storage)
    ctx = ValidationContext(settings=settings, voices=voices, default_voice=options.voice,
                            default_language=options.language, lexicons=library, batch_lexicons=options.lexicons)
    try:
        for name in options.lexicons:
            if name not in library.keys:
                raise LexiconError("lexicons (Param)", None, None, f"unknown lexicon {name!r}; lexicons in the "
                                   f"library: {', '.join(library.keys) or 'none'}")
            library.load(name)
        items, errors, summaries = _validate_manifests(storage, settings, manifest_keys, ctx)
    except LexiconError as exc:
        log.error("planning stopped: %s", exc)
        summaries = [ManifestSummary(key=key, lines=0, accepted=0, rejected=0, error=str(exc))
                     for key in manifest_keys]
        storage.put_text(layout.quarantine, "")
        storage.put_json(layout.plan, BatchPlan(
            batch_id=layout.batch_id, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            options=options, manifests=summaries, items=[], quarantined=0, chunks=[], error=str(exc)))
        raise

    chunks = write_chunks(storage, layout.batch_id, items, options, settings=settings)

    storage.put_text(layout.quarantine, "".join(e.model_dump_json() + "\n" for e in errors))
    plan = BatchPlan(batch_id=layout.batch_id, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     options=options, manifests=summaries, items=items, quarantined=len(errors), chunks=chunks)
    storage.put_json(layout.plan, plan)
    if not items:
        reasons = "; ".join(s.error or f"{s.key}: no valid line" for s in summaries) or "no manifest"
        raise ManifestError(f"batch {layout.batch_id} has no valid line to narrate: {reasons}")
    return plan


def _validate_manifests(storage: Storage, settings: Settings, manifest_keys: list[str], ctx: ValidationContext
                        ) -> tuple[list[ItemSpec], list[LineError], list[ManifestSummary]]:
    items: list[ItemSpec] = []
    errors: list[LineError] = []
    summaries: list[ManifestSummary] = []
    for key in manifest_keys:
        name = manifest_name(key, settings.incoming_prefix)
        try:
            parsed = parse_manifest(name, storage.get_bytes(key), ctx)
        except ManifestError as exc:
            errors.append(LineError(manifest=name, line=0, field=None, reason=str(exc)))
            summaries.append(ManifestSummary(key=key, lines=0, accepted=0, rejected=0, error=str(exc)))
            continue
        items.extend(parsed.items)
        errors.extend(parsed.errors)
        error = None if parsed.items else f"{name}: no valid line ({len(parsed.errors)} rejected)"
        summaries.append(ManifestSummary(key=key, lines=parsed.lines_seen, accepted=len(parsed.items),
                                         rejected=len(parsed.errors), error=error))
        for err in parsed.errors:
            log.warning("quarantined %s:%d %s: %s", err.manifest, err.line, err.field or "-", err.reason)
    return items, errors, summaries


def load_plan(storage: Storage, batch_id: str) -> BatchPlan:
    return BatchPlan.model_validate(storage.get_json(BatchLayout(batch_id).plan))


def load_quarantine(storage: Storage, batch_id: str) -> list[LineError]:
    try:
        text = storage.get_text(BatchLayout(batch_id).quarantine)
    except KeyError:
        return []
    # split on "\n" only: str.splitlines() also breaks at U+0085 and U+2028, which JSON leaves unescaped in reasons
    return [LineError.model_validate_json(line) for line in text.split("\n") if line.strip()]
