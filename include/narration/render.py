"""The render step: pick each item's final timings (primary, else fallback), write its subtitle and word files,
and write its result record last, which is also the item's row in the batch report.
"""

from __future__ import annotations

import logging
import time

from narration.layout import BatchLayout
from narration.pipeline import Progress, load_chunk  # noqa: F401  (load_chunk re-exported for callers)
from narration.report import item_row
from narration.schema import ChunkResult, ChunkSpec, ItemResult, ItemStatus, SynthesisRecord, TimingRecord
from narration.settings import Settings
from narration.storage import Storage
from narration.subtitles import formats as subtitle_formats
from narration.subtitles import get_profile, segment_cues

log = logging.getLogger(__name__)

FALLBACK_BACKEND = "google"


def resolve_timing(storage: Storage, layout: BatchLayout, chunk: ChunkSpec, item_id: str,
                   fallback_unavailable: str | None) -> TimingRecord | None:
    """The timing record the item ships with: the primary's when it aligned, else the fallback's."""
    primary_doc = storage.get_json_or_none(layout.timing(item_id, chunk.aligner))
    primary = TimingRecord.model_validate(primary_doc) if primary_doc else None
    if primary and primary.status == ItemStatus.ALIGNED:
        return primary
    fallback_doc = storage.get_json_or_none(layout.timing(item_id, FALLBACK_BACKEND))
    if fallback_doc:
        return TimingRecord.model_validate(fallback_doc)
    if primary is None:
        return None
    why_not = fallback_unavailable or "the fallback step did not run for this item"
    return primary.model_copy(update={
        "status": ItemStatus.TIMING_FAILED,
        "fallback_reason": f"{primary.fallback_reason}; fallback not run: {why_not}",
    })


def render_chunk(storage: Storage, settings: Settings, chunk: ChunkSpec, *, formats: list[str],
                 profile_name: str, vtt_word_timestamps: bool = False, fallback_unavailable: str | None = None,
                 progress: Progress = log.info) -> ChunkResult:
    layout = BatchLayout(chunk.batch_id)
    profile = get_profile(profile_name)
    started = time.perf_counter()
    results = []
    for item in chunk.items:
        t0 = time.perf_counter()
        synth_doc = storage.get_json_or_none(layout.synthesis(item.item_id))
        synthesis = SynthesisRecord.model_validate(synth_doc) if synth_doc else None
        outputs: dict[str, str] = {}
        if synthesis is None or synthesis.status != ItemStatus.SYNTHESIZED:
            error = synthesis.error if synthesis else "synthesis did not complete (no synthesis record)"
            row = item_row(item, synthesis, status=ItemStatus.SYNTHESIS_FAILED, error=error)
        else:
            outputs["audio"] = synthesis.audio_key
            timing = resolve_timing(storage, layout, chunk, item.item_id, fallback_unavailable)
            if timing is None or timing.status != ItemStatus.ALIGNED:
                error = timing.fallback_reason if timing else "alignment did not complete (no timing record)"
                row = item_row(item, synthesis, timing, outputs=outputs, status=ItemStatus.TIMING_FAILED,
                               error=error, low_confidence_below=settings.low_confidence_scores.get(timing.method))
                # No backend's timings ship with this item: name none (the reason lists what was tried).
                row = row.model_copy(update={"timing_method": None})
            else:
                cues = segment_cues(timing.words, profile)
                metadata = {
                    "item_id": item.item_id, "batch_id": chunk.batch_id, "method": timing.method,
                    "attempted": timing.attempted, "fallback_reason": timing.fallback_reason,
                    "resolution_ms": timing.resolution_ms, "language": timing.language, "model": timing.model,
                    "synthesizer": synthesis.backend, "profile": profile.name,
                }
                documents = {
                    "srt": lambda: subtitle_formats.to_srt(cues),
                    "vtt": lambda: subtitle_formats.to_vtt(cues, timing.words,
                                                           inline_word_timestamps=vtt_word_timestamps),
                    "ass": lambda: subtitle_formats.to_ass(cues, timing.words),
                    "json": lambda: subtitle_formats.to_words_json(timing.words, cues, metadata),
                    "csv": lambda: subtitle_formats.to_words_csv(timing.words),
                }
                for fmt in formats:
                    outputs[fmt] = storage.put_text(layout.subtitle(item.item_id, fmt), documents[fmt]())
                row = item_row(item, synthesis, timing, cues, outputs, status=ItemStatus.DONE, error=None,
                               low_confidence_below=settings.low_confidence_scores.get(timing.method))
        storage.put_json(layout.result(item.item_id), row)
        results.append(ItemResult(item_id=item.item_id, status=ItemStatus(row.status), error=row.error))
        progress(f"rendered {item.item_id}: {row.status} ({time.perf_counter() - t0:.2f} s)")
    return ChunkResult(batch_id=chunk.batch_id, chunk_id=chunk.chunk_id, step="render", backend="pysubs2",
                       items=results, model_loads=0, model_load_s=0.0,
                       compute_s=round(time.perf_counter() - started, 4),
                       wall_s=round(time.perf_counter() - started, 4))
