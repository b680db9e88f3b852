"""The render step: pick each item's final timings (primary, else fallback), deliver its audio (the master
normalised to the loudness target, and the batch's encodings of it), write its subtitle and word files, and write
its result record last, which is also the item's row in the batch report.

The result record carries a content hash of everything the item's files were made from (S3 user metadata
``render-key``); a re-run finds it, sees the files in place and skips the item, unless ``force`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field

from narration import audio as audio_io
from narration.dev.faults import FaultPlan
from narration.encodings import ENCODINGS, check_encodings, encode_file, encoder
from narration.errors import InfrastructureFault
from narration.layout import BatchLayout
from narration.longform import chapter_marks, paragraph_ends
from narration.loudness import RENDER_BLOCK_SAMPLES, LoudnessError, normalise_stream
from narration.pipeline import cache_key, load_chunk, read_record  # noqa: F401  (load_chunk re-exported)
from narration.report import ItemReportRow, item_row
from narration.schema import ChunkResult, ChunkSpec, ItemResult, ItemSpec, ItemStatus, SynthesisRecord, TimingRecord
from narration.settings import Settings
from narration.storage import Storage
from narration.subtitles import get_profile, segment_cues
from narration.subtitles.formats import get_format
from narration.subtitles.formats.base import SubtitleDocument

log = logging.getLogger(__name__)

RENDER_KEY = "render-key"  # S3 user metadata on result.json


def resolve_timing(storage: Storage, layout: BatchLayout, chunk: ChunkSpec, item_id: str) -> TimingRecord | None:
    """The timing record the item ships with: the primary's when it aligned, else the fallback's."""
    primary = read_record(storage, layout.timing(item_id, chunk.aligner), TimingRecord)[0]
    if primary and primary.status == ItemStatus.ALIGNED:
        return primary
    fallback = read_record(storage, layout.timing(item_id, chunk.fallback_aligner), TimingRecord)[0]
    if fallback:
        return fallback
    if primary is None:
        return None
    why_not = chunk.fallback_unavailable or "the fallback step did not run for this item"
    return primary.model_copy(update={
        "status": ItemStatus.TIMING_FAILED,
        "fallback_reason": f"{primary.fallback_reason}; fallback not run: {why_not}",
    })


@dataclass(frozen=True)
class AudioDelivery:
    """What every item's delivered audio must be: its loudness target, true-peak ceiling and encodings."""

    target_lufs: float
    true_peak_ceiling_dbtp: float
    encodings: list[str] = field(default_factory=list)

    @classmethod
    def resolve(cls, settings: Settings, chunk: ChunkSpec) -> AudioDelivery:
        """The chunk's choices, each None falling back to the configured default."""
        target, ceiling, encodings = chunk.loudness_target_lufs, chunk.true_peak_ceiling_dbtp, chunk.audio_encodings
        return cls(settings.loudness_target_lufs if target is None else target,
                   settings.true_peak_ceiling_dbtp if ceiling is None else ceiling,
                   check_encodings(list(settings.audio_encodings if encodings is None else encodings)))


def render_chunk(storage: Storage, settings: Settings, chunk: ChunkSpec) -> ChunkResult:
    """Render every item of the chunk as the chunk's choices say: its formats, its subtitle profile (at the chosen
    frame rate, which cue times snap to) and its loudness target, ceiling and encodings (None: the configured)."""
    layout = BatchLayout(chunk.batch_id)
    profile = get_profile(chunk.subtitle_profile, fps=chunk.subtitle_fps)
    audio = AudioDelivery.resolve(settings, chunk)
    formats, vtt_word_timestamps = chunk.formats, chunk.vtt_word_timestamps
    force = bool(chunk.params.get("force"))
    faults = FaultPlan("render", chunk.chunk_id)
    storage = faults.wrap_storage(storage, layout, chunk, record=layout.result, backend_input=layout.audio)
    started = time.perf_counter()

    def render_one(item: ItemSpec) -> tuple[ItemResult, bool]:
        """(the item's result, whether it was skipped as already rendered)."""
        t0 = time.perf_counter()
        synthesis = read_record(storage, layout.synthesis(item.item_id), SynthesisRecord)[0]
        timing = None
        if synthesis is not None and synthesis.status == ItemStatus.SYNTHESIZED:
            timing = resolve_timing(storage, layout, chunk, item.item_id)
        key = cache_key("render", synthesis.model_dump(mode="json") if synthesis else None,
                        timing.model_dump(mode="json") if timing else None, formats, profile.model_dump(),
                        vtt_word_timestamps, settings.low_confidence_scores, audio.__dict__)
        expected = _expected_outputs(layout, item.item_id, synthesis, timing, formats, audio)
        current = None if force else storage.metadata(layout.result(item.item_id))
        if current is not None and current.get(RENDER_KEY) == key and expected <= set(
                storage.list_keys(layout.item_prefix(item.item_id))):
            row = _reusable_row(storage, layout, item.item_id)
            if row is not None:
                return ItemResult(item_id=item.item_id, status=ItemStatus(row.status), error=row.error), True
        if current is not None:  # retract it first: a kill before the new record must not leave it vouching
            storage.delete(layout.result(item.item_id))
        try:
            row = _render_item(storage, settings, layout, chunk, item, synthesis, timing, formats, profile,
                               vtt_word_timestamps, audio)
            metadata = {RENDER_KEY: key}
        except InfrastructureFault:
            raise  # storage failed, not the item: the chunk fails (and is retried)
        except Exception as exc:  # an ItemFault or any crash in a writer fails only this item
            log.error("rendering %s failed: %s", item.item_id, traceback.format_exc())
            row = item_row(item, synthesis, timing, status=ItemStatus.FAILED,
                           error=f"rendering failed: {type(exc).__name__}: {exc}")
            metadata = None  # no key: the next run renders it again
        storage.put_json(layout.result(item.item_id), row, metadata=metadata)
        log.info("rendered %s: %s (%.2f s)", item.item_id, row.status, time.perf_counter() - t0)
        return ItemResult(item_id=item.item_id, status=ItemStatus(row.status), error=row.error), False

    # Items are independent and their work is mostly S3 round trips: several at once.
    outcomes = storage.map(render_one, chunk.items)
    results = [result for result, _ in outcomes]
    skipped = sum(1 for _, was_skipped in outcomes if was_skipped)
    return ChunkResult(batch_id=chunk.batch_id, chunk_id=chunk.chunk_id, step="render", backend="pysubs2",
                       items=results, model_loads=0, model_load_s=0.0,
                       compute_s=round(time.perf_counter() - started, 4),
                       wall_s=round(time.perf_counter() - started, 4), skipped=skipped)


def _reusable_row(storage: Storage, layout: BatchLayout, item_id: str) -> ItemReportRow | None:
    """The item's result record when it and the words JSON it points to parse (the other files were checked to
    exist; their content is fixed by the render key); None means render again."""
    row = read_record(storage, layout.result(item_id), ItemReportRow)[0]
    if row is None or not row.json_key:
        return row
    try:
        json.loads(storage.get_bytes(row.json_key))
    except (KeyError, ValueError) as exc:
        log.warning("rendering %s again: %s is not valid JSON (%s)", item_id, storage.uri(row.json_key), exc)
        return None
    return row


def _expected_outputs(layout: BatchLayout, item_id: str, synthesis: SynthesisRecord | None,
                      timing: TimingRecord | None, formats: list[str], audio: AudioDelivery) -> set[str]:
    """Every object a finished render of the item leaves under its prefix."""
    keys = {layout.result(item_id)}
    if synthesis is not None and synthesis.audio_key:
        keys.add(synthesis.audio_key)
        keys.add(layout.delivery(item_id))
        keys.update(layout.delivery_audio(item_id, name) for name in ["wav", *audio.encodings])
    if timing is not None and timing.status == ItemStatus.ALIGNED:
        keys.update(layout.subtitle(item_id, fmt) for fmt in formats)
    return keys


def deliver_audio(storage: Storage, layout: BatchLayout, item_id: str, synthesis: SynthesisRecord,
                  audio: AudioDelivery) -> tuple[dict[str, str], dict]:
    """Normalise the item's take to the loudness target and write the WAV master and each encoding of it.

    Returns the output keys by kind (``audio`` is the master) and the report row's loudness fields; the figures
    and encoders also go to the item's delivery record. Audio too short or silent to measure ships at its own
    level, and the row says why.

    The master is read from S3 to a temporary file, normalised block by block into a float WAV beside it, and
    each encoding is made from that file and uploaded from its own: an hour's programme is never held in memory.
    """
    import soundfile

    with tempfile.TemporaryDirectory(prefix="narration-render-") as tmp:
        master, normalised = os.path.join(tmp, "master.wav"), os.path.join(tmp, "normalised.wav")
        storage.download_file(synthesis.audio_key, master)
        with audio_io.WavFileReader(master) as reader:
            rate, frames = reader.sample_rate, reader.frames
            with soundfile.SoundFile(normalised, "w", rate, 1, format="WAV", subtype="FLOAT") as out:
                try:
                    loudness = normalise_stream(reader, audio.target_lufs, audio.true_peak_ceiling_dbtp, out.write)
                    error = None
                except LoudnessError as exc:  # raised by the first, measuring pass: nothing written yet
                    for _, block in reader.blocks(RENDER_BLOCK_SAMPLES):
                        out.write(block.astype("float32"))
                    loudness, error = None, f"{exc}; delivered at its synthesised level"
        os.remove(master)
        outputs: dict[str, str] = {}
        for kind, name in [("audio", "wav"), *((name, name) for name in audio.encodings)]:
            encoded = encode_file(normalised, os.path.join(tmp, f"narration.{ENCODINGS[name].extension}"), name)
            outputs[kind] = storage.upload_file(layout.delivery_audio(item_id, name), encoded)
            os.remove(encoded)
    storage.put_json(layout.delivery(item_id), {
        "item_id": item_id, "sample_rate": rate, "duration_s": round(frames / rate, 4),
        "loudness": loudness.model_dump() if loudness else None, "loudness_error": error,
        "encoders": {kind: encoder("wav" if kind == "audio" else kind) for kind in outputs}, "outputs": outputs,
    })
    fields = {"loudness_target_lufs": audio.target_lufs, "loudness_error": error}
    if loudness is not None:
        fields.update(loudness_lufs_before=loudness.integrated_lufs_before,
                      true_peak_dbtp_before=loudness.true_peak_dbtp_before,
                      loudness_lufs=loudness.integrated_lufs, true_peak_dbtp=loudness.true_peak_dbtp)
    return outputs, fields


def _render_item(storage: Storage, settings: Settings, layout: BatchLayout, chunk: ChunkSpec, item: ItemSpec,
                 synthesis: SynthesisRecord | None, timing: TimingRecord | None, formats: list[str], profile,
                 vtt_word_timestamps: bool, audio: AudioDelivery):
    if synthesis is None or synthesis.status != ItemStatus.SYNTHESIZED:
        error = synthesis.error if synthesis else "synthesis did not complete (no synthesis record)"
        return item_row(item, synthesis, status=ItemStatus.SYNTHESIS_FAILED, error=error)
    outputs, loudness_fields = deliver_audio(storage, layout, item.item_id, synthesis, audio)
    if timing is None or timing.status != ItemStatus.ALIGNED:
        error = timing.fallback_reason if timing else "alignment did not complete (no timing record)"
        row = item_row(item, synthesis, timing, outputs=outputs, status=ItemStatus.TIMING_FAILED, error=error,
                       low_confidence_below=settings.low_confidence_scores.get(timing.method) if timing else None)
        # No backend's timings ship with this item: name none (the reason lists what was tried).
        return row.model_copy(update={"timing_method": None, **loudness_fields})
    cues = segment_cues(timing.words, profile, paragraph_ends(synthesis.segments))
    metadata = {
        "item_id": item.item_id, "batch_id": chunk.batch_id, "method": timing.method,
        "attempted": timing.attempted, "fallback_reason": timing.fallback_reason,
        "resolution_ms": timing.resolution_ms, "language": timing.language, "model": timing.model,
        "synthesizer": synthesis.backend, "profile": profile.name, "unspoken_words": item.unspoken_words,
        "detected_language": synthesis.detected_language, "language_probability": synthesis.language_probability,
        "language_mismatch": synthesis.language_mismatch, "voice_similarity": synthesis.voice_similarity,
        "voice_cloning": synthesis.voice_cloning,
    }
    chapters = chapter_marks(item, synthesis.segments, round((synthesis.audio_seconds or 0) * 1000))
    document = SubtitleDocument(cues=cues, words=timing.words, language=item.locale, profile=profile,
                                metadata=metadata, vtt_word_timestamps=vtt_word_timestamps, chapters=chapters)
    rendered = {fmt: get_format(fmt).write(document) for fmt in formats}  # every writer runs before anything is stored
    for fmt, text in rendered.items():
        outputs[fmt] = storage.put_text(layout.subtitle(item.item_id, fmt), text)
    row = item_row(item, synthesis, timing, cues, outputs, status=ItemStatus.DONE, error=None,
                   low_confidence_below=settings.low_confidence_scores.get(timing.method))
    return row.model_copy(update=loudness_fields)
