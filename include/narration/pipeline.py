"""The worker steps: synthesize, align and render one chunk, reading from and writing to S3.

Each step loads its backend once per chunk, isolates failures per item (one bad item never fails its chunk),
skips items whose outputs already exist for the same inputs and pass their checks (a record that parses and carries
the cache key, audio that is the audio its record describes), and returns a small :class:`ChunkResult`. An
unreachable S3 is not an item failure: it fails the chunk, so that the task is retried and redoes only what is missing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from narration import audio as audio_io
from narration.align import FALLBACK_ALIGNER, get_aligner_class
from narration.align.base import AlignmentError, quality_problem
from narration.dev.faults import FaultPlan
from narration.errors import InfrastructureFault
from narration.layout import BatchLayout, voice_reference_key
from narration.lexicons import item_tokens
from narration.longform import is_long, pause_settings, segment_seed, segment_tokens
from narration.schema import (
    ChunkResult,
    ChunkSpec,
    ItemResult,
    ItemSpec,
    ItemStatus,
    SegmentRecord,
    SegmentSpan,
    SynthesisRecord,
    TimingRecord,
    WordTiming,
)
from narration.settings import Settings
from narration.storage import Prefetch, Storage, WriteBehind
from narration.synth import SYNTHESIZERS, get_synthesizer_class
from narration.synth.base import SynthesisRequest
from narration.voices import materialise_voice

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def cache_key(*parts: object) -> str:
    """A content hash of everything an output depends on; equal keys mean the output can be reused."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


# Where each backend reads its own parameters from (its settings class's environment prefix). The intelligibility
# gate decides which take a synthesizer keeps and the quality checks fill the record, so their settings are part
# of every synthesis key.
# Every synthesizer's output also depends on the intelligibility gate and the quality checks that may re-sample it.
SYNTHESIS_ENV_PREFIXES = ("NARRATION_GATE_", "NARRATION_QUALITY_")


def backend_params(backend: str, settings: Settings, environ: dict[str, str] | None = None) -> dict:
    """The configuration a backend's output depends on: its ``NARRATION_<BACKEND>_*`` environment and the model
    cache root; part of every cache key, so changing a model or a sampling parameter redoes the work."""
    environ = os.environ if environ is None else environ
    prefixes = (f"NARRATION_{backend.upper()}_", *(SYNTHESIS_ENV_PREFIXES if backend in SYNTHESIZERS else ()))
    params = {k: v for k, v in sorted(environ.items()) if k.startswith(prefixes)}
    params["model_dir"] = settings.model_dir
    return params


def chunk_params(chunk: ChunkSpec) -> dict:
    """The chunk's parameters that shape outputs (``force`` only decides whether to reuse them)."""
    return {k: v for k, v in chunk.params.items() if k != "force"}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_tokens = item_tokens  # every step's tokens


class _Clock:
    def __init__(self):
        self.start = time.perf_counter()
        self.load_s = 0.0
        self.compute_s = 0.0

    def result(self, chunk: ChunkSpec, step: str, backend: str, results: list[ItemResult], loads: int,
               skipped: int) -> ChunkResult:
        """The step's result line, items in chunk order."""
        order = {item.item_id: n for n, item in enumerate(chunk.items)}
        return ChunkResult(batch_id=chunk.batch_id, chunk_id=chunk.chunk_id, step=step, backend=backend,
                           items=sorted(results, key=lambda r: order[r.item_id]), model_loads=loads,
                           model_load_s=round(self.load_s, 4), compute_s=round(self.compute_s, 4),
                           wall_s=round(time.perf_counter() - self.start, 4), skipped=skipped)


def load_chunk(storage: Storage, chunk_key: str) -> ChunkSpec:
    return ChunkSpec.model_validate(storage.get_json(chunk_key))


def read_record(storage: Storage, key: str, model: type[M]) -> tuple[M | None, str | None]:
    """(the record at ``key``, None), or (None, why not): missing, or not a valid record (corrupt JSON, wrong
    shape). A record that cannot be read vouches for nothing, so the step redoes its item."""
    try:
        data = storage.get_bytes(key)
    except KeyError:
        return None, "missing"
    try:
        return model.model_validate_json(data), None
    except ValueError as exc:
        problem = f"not a valid {model.__name__}: {str(exc).splitlines()[0][:200]}"
        log.warning("%s: %s", storage.uri(key), problem)
        return None, problem


def audio_problem(storage: Storage, record: SynthesisRecord) -> str | None:
    """Why the object at the record's ``audio_key`` is not the audio the record describes, or None. Reads the
    header and the size only (one ranged GET): it parses, holds every frame its header states, and has the
    record's sample rate and length."""
    if not record.audio_key:
        return "the record names no audio object"
    try:
        prefix, size = storage.get_prefix(record.audio_key, audio_io.WAV_HEADER_BYTES)
    except KeyError:
        return "missing"
    return audio_io.wav_problem(prefix, size, sample_rate=record.sample_rate, seconds=record.audio_seconds)


# ------------------------------------------------------------------------------------------------------------
# synthesize


def synthesis_cache_key(item: ItemSpec, backend: str, voice_etag: str, params: dict) -> str:
    # An item's matching lexicon entries are part of its key; an item that matches none keeps the key it had.
    lexicon = [[p.model_dump() for p in item.pronunciations]] if item.pronunciations else []
    return cache_key("synthesis", item.text, item.voice, item.language, item.locale, item.speed, item.seed, backend,
                     voice_etag, params, *lexicon)


def longform_cache_key(item: ItemSpec, base_key: str, settings: Settings) -> str:
    """A long item's synthesis key: what its segments are made from (``base_key``) plus what joins them into the
    master (paragraphs, chapters, pauses)."""
    return cache_key("longform", base_key, item.paragraphs, [c.model_dump() for c in item.chapters],
                     pause_settings(settings))


def segment_cache_key(base_key: str, index: int, tokens, seed: int | None) -> str:
    """A segment's key: the item's synthesis inputs, the segment's index, its tokens and seed."""
    return cache_key("segment", base_key, index, [t.model_dump() for t in tokens], seed)


def synthesis_problem(record: SynthesisRecord | None, storage: Storage, key: str) -> str | None:
    """Why the item's synthesis cannot be reused for these inputs, or None: the record must be a success for
    exactly this cache key, and its audio object the audio it describes."""
    if record is None:
        return "no synthesis record"
    if record.status != ItemStatus.SYNTHESIZED:
        return f"last synthesis ended {record.status.value}"
    if record.params.get("cache_key") != key:
        return "made from other inputs"
    problem = audio_problem(storage, record)
    return f"{storage.uri(record.audio_key or '')}: {problem}" if problem else None


def synthesize_chunk(storage: Storage, settings: Settings, chunk: ChunkSpec) -> ChunkResult:
    layout = BatchLayout(chunk.batch_id)
    clock = _Clock()
    force = bool(chunk.params.get("force"))
    faults = FaultPlan("synthesize", chunk.chunk_id)
    storage = faults.wrap_storage(storage, layout, chunk, record=layout.synthesis)
    synth_cls = get_synthesizer_class(chunk.synthesizer)
    params = {**backend_params(chunk.synthesizer, settings), **synth_cls.output_params(), **chunk_params(chunk)}
    results: list[ItemResult] = []
    skipped = 0
    todo: list[tuple[ItemSpec, str]] = []
    etags = {voice: storage.etag(voice_reference_key(voice)) or "missing"
             for voice in dict.fromkeys(item.voice for item in chunk.items)}

    def already_done(item: ItemSpec) -> tuple[str, bool]:
        """(the item's cache key, whether its current synthesis is in place and valid); retracts a stale or
        invalid record."""
        key = synthesis_cache_key(item, chunk.synthesizer, etags[item.voice], params)
        if is_long(item, settings):
            key = longform_cache_key(item, key, settings)
        record, unreadable = read_record(storage, layout.synthesis(item.item_id), SynthesisRecord)
        if unreadable == "missing":
            return key, False
        problem = unreadable or synthesis_problem(record, storage, key)
        if not force and problem is None:
            return key, True
        log.info("synthesizing %s again: %s", item.item_id, problem or "force_rerender is set")
        # Retract it first: a kill before the new record must not leave it vouching.
        storage.delete(layout.synthesis(item.item_id))
        return key, False

    for item, (key, done) in zip(chunk.items, storage.map(already_done, chunk.items)):
        if done:
            results.append(ItemResult(item_id=item.item_id, status=ItemStatus.SYNTHESIZED))
            skipped += 1
        else:
            todo.append((item, key))

    loads = 0
    if todo:
        from narration.quality import QualityChecks

        checks = QualityChecks(settings)
        synth = faults.wrap_backend(_with_gate(synth_cls(settings), settings, checks), chunk)
        t0 = time.perf_counter()
        try:  # a model that fails to load still releases the ones loaded before it
            checks.load()  # first: the gate can reuse its multilingual Whisper
            synth.load()
            clock.load_s = time.perf_counter() - t0
            loads = 1
            # Each item's audio and record go to S3 in the background while the model speaks the next item.
            with tempfile.TemporaryDirectory(prefix="narration-voices-") as voice_dir, WriteBehind() as writer:
                # A long item announces its own segments when it comes (a batching backend then generates a
                # window of them at a time); the short items after it are announced again.
                _announce(storage, synth, [item for item, _ in todo if not is_long(item, settings)], voice_dir)
                for position, (item, key) in enumerate(todo):
                    if is_long(item, settings):
                        base_key = synthesis_cache_key(item, chunk.synthesizer, etags[item.voice], params)
                        results.append(_synthesize_long_item(storage, layout, synth, synth_cls, item, key, base_key,
                                                             voice_dir, clock, writer, checks, settings,
                                                             reuse_segments=not force))
                        _announce(storage, synth, [later for later, _ in todo[position + 1:]
                                                   if not is_long(later, settings)], voice_dir)
                    else:
                        results.append(_synthesize_item(storage, layout, synth, item, key, voice_dir, clock, writer,
                                                        checks))
                    log.info("synthesized %s: %s", item.item_id, results[-1].status.value)
        finally:
            checks.close()
            synth.close()
    return clock.result(chunk, "synthesize", chunk.synthesizer, results, loads, skipped)


def _announce(storage: Storage, synth, items: list[ItemSpec], voice_dir: str) -> None:
    """Tell the synthesizer every item it will be asked for, so a batching backend generates several at once. An
    item whose voice or text cannot be prepared is left out: its own attempt reports the error."""
    voices: dict[str, object] = {}
    requests = []
    for item in items:
        try:
            if item.voice not in voices:
                voices[item.voice] = materialise_voice(storage, item.voice, voice_dir)
            requests.append(SynthesisRequest(_tokens(item), voices[item.voice], item.speed, item.seed))
        except InfrastructureFault:
            raise
        except Exception as exc:  # reported by the item's own synthesis
            log.debug("not announcing %s: %s", item.item_id, exc)
    synth.prepare(requests)


def _with_gate(synth, settings: Settings, checks=None):
    """Wrap the synthesizer in the intelligibility gate when NARRATION_GATE_ENABLED is set; with
    NARRATION_QUALITY_MIN_VOICE_SIMILARITY the gate re-samples on voice similarity too."""
    from narration.gate import GatedSynthesizer, GateSettings, IntelligibilityGate

    gate_settings = GateSettings()
    if not gate_settings.enabled:
        return synth
    return GatedSynthesizer(synth, IntelligibilityGate(settings, gate_settings), checks)


def _synthesize_item(storage, layout, synth, item: ItemSpec, key: str, voice_dir: str, clock: _Clock,
                     writer: WriteBehind, checks=None) -> ItemResult:
    t0 = time.perf_counter()
    tokens = _tokens(item)
    audio: tuple[str, bytes] | None = None
    record = None
    try:
        voice = materialise_voice(storage, item.voice, voice_dir)
        out = synth.synthesize(tokens, voice, speed=item.speed, seed=item.seed)
        quality = _quality_fields(checks, out, item, voice, synth.clones_voice)
        elapsed = time.perf_counter() - t0
        audio_key = layout.audio(item.item_id)
        audio = audio_key, audio_io.to_wav_bytes(out.audio, out.sample_rate)
        record = SynthesisRecord(
            item_id=item.item_id, status=ItemStatus.SYNTHESIZED, backend=synth.name, audio_key=audio_key,
            sample_rate=out.sample_rate, audio_seconds=round(audio_io.duration_s(out.audio, out.sample_rate), 3),
            params={**out.params, **_lexicon_params(item, synth.name), "cache_key": key},
            attempts=int(out.params.get("attempts", 1)),
            asr_wer=out.params.get("asr_wer"), reference_words=out.reference_words, tokens=tokens,
            compute_s=round(elapsed, 4), **quality,
        )
        status = ItemStatus.SYNTHESIZED
        error = None
        if quality.get("language_mismatch") and checks.quality.fail_on_language_mismatch:
            from narration.quality import LanguageMismatchError

            raise LanguageMismatchError(f"{item.manifest}:{item.line}: language: the audio is spoken in "
                                        f"{quality['detected_language']!r} (p={quality['language_probability']:.2f})"
                                        f", the item requests {item.language!r}")
    except InfrastructureFault:
        raise  # storage failed, not the item: the whole chunk fails (and is retried)
    except Exception as exc:  # an ItemFault or any crash on this item fails only this item
        elapsed = time.perf_counter() - t0
        log.error("synthesis of %s failed: %s", item.item_id, traceback.format_exc())
        error = _error_text(exc)
        kept = {k: v for k, v in record.model_dump().items() if k in _QUALITY_FIELDS} if record else {}
        audio = None
        record = SynthesisRecord(item_id=item.item_id, status=ItemStatus.SYNTHESIS_FAILED, backend=synth.name,
                                 tokens=tokens, compute_s=round(elapsed, 4), error=error, **kept)
        status = ItemStatus.SYNTHESIS_FAILED
    clock.compute_s += elapsed

    def write() -> None:
        if audio is not None:
            storage.put_bytes(*audio)
        storage.put_json(layout.synthesis(item.item_id), record)  # written last: its presence means the item is done

    writer.submit(write)
    return ItemResult(item_id=item.item_id, status=status, error=error)


def _lexicon_params(item: ItemSpec, backend: str) -> dict:
    """What the synthesis record says of the item's lexicon entries: each one and what this backend did with it
    (a backend that takes no phonemes speaks a phoneme entry's word as written), and the batch's lexicons of
    another language, not applied to it."""
    spared = {"lexicons_not_applied": [f"{name}: another language than the item's {item.locale}"
                                       for name in item.lexicons_not_applied]} if item.lexicons_not_applied else {}
    if not item.pronunciations:
        return spared
    takes_phonemes = get_synthesizer_class(backend).takes_phonemes
    notes = []
    for p in item.pronunciations:
        phrase = len(p.grapheme.split()) > 1
        if p.alias is not None:
            notes.append(f"{p.grapheme}: alias {p.alias!r} ({p.lexicon})")
        elif takes_phonemes:
            notes.append(f"{p.grapheme}: phonemes /{p.phonemes}/ spoken by {backend}{' as one word' * phrase} "
                         f"({p.lexicon})")
        else:
            notes.append(f"{p.grapheme}: phoneme entry /{p.phonemes}/ not applied: {backend} takes words only, "
                         f"so the {'phrase' if phrase else 'word'} is read as written ({p.lexicon})")
    return {"lexicon_entries": notes, **spared}


# A long item's quality checks judge one segment: the first synthesised with this much speech (a chapter heading
# of two words is too short to tell its language), else the longest synthesised.
QUALITY_SAMPLE_S = 3.0


def _finished_segments(storage: Storage, layout: BatchLayout, item: ItemSpec) -> dict[int, SegmentRecord]:
    """The item's segment records already in S3 whose audio is the audio they describe, by index (one listing,
    then a record and a header read per segment found)."""
    prefix = layout.segments_prefix(item.item_id)
    indexes = sorted(index for key in storage.list_keys(prefix)
                     if (index := layout.segment_record_index(key)) is not None)

    def check(index: int) -> SegmentRecord | None:
        record = read_record(storage, layout.segment_record(item.item_id, index), SegmentRecord)[0]
        if record is None:
            return None
        try:
            header, size = storage.get_prefix(record.audio_key, audio_io.WAV_HEADER_BYTES)
        except KeyError:
            return None
        problem = audio_io.wav_problem(header, size, sample_rate=record.sample_rate,
                                       seconds=record.frames / record.sample_rate)
        return None if problem else record

    return {index: record for index, record in zip(indexes, storage.map(check, indexes)) if record is not None}


def _shifted(words: list[WordTiming] | None, offset_ms: int) -> list[WordTiming] | None:
    if words is None:
        return None
    return [w.model_copy(update={"start_ms": None if w.start_ms is None else w.start_ms + offset_ms,
                                 "end_ms": None if w.end_ms is None else w.end_ms + offset_ms}) for w in words]


def _synthesize_long_item(storage, layout: BatchLayout, synth, synth_cls, item: ItemSpec, key: str, base_key: str,
                          voice_dir: str, clock: _Clock, writer: WriteBehind, checks, settings: Settings,
                          reuse_segments: bool = True) -> ItemResult:
    """A long item, segment by segment: each segment's audio and record go to S3 as soon as it is made (a killed
    worker resumes at the first segment without them), and the segments are streamed into one master WAV with the
    pauses the text asks for; only a few segments' audio are ever in memory."""
    import wave

    t0 = time.perf_counter()
    tokens = _tokens(item)
    position = "before its first segment"
    try:
        voice = materialise_voice(storage, item.voice, voice_dir)
        segments = segment_tokens(tokens, item, synth_cls, settings)
        finished = _finished_segments(storage, layout, item) if reuse_segments else {}  # force_rerender
        seeds = [segment_seed(item, segment.index) for segment in segments]
        keys = [segment_cache_key(base_key, segment.index, segment.tokens, seed)
                for segment, seed in zip(segments, seeds)]
        # The segments to make, announced: F5-TTS generates a window of 4 x its batch size at a time, so that many
        # segments' audio is the most ever held; the others synthesise one at a time and hold one.
        synth.prepare([SynthesisRequest(segment.tokens, voice, item.speed, seed)
                       for segment, seed, segment_key in zip(segments, seeds, keys)
                       if getattr(finished.get(segment.index), "cache_key", None) != segment_key])
        spans: list[SegmentSpan] = []
        reference: list[WordTiming] | None = []
        first_params: dict = {}
        attempts, wers, quality = 1, [], None
        judged, longest = None, None  # the segment the quality checks judge (the first long enough to judge)
        with tempfile.TemporaryDirectory(prefix="narration-master-") as work:
            path = os.path.join(work, "master.wav")
            master = None
            rate, frame = None, 0
            try:
                for segment, seed, segment_key in zip(segments, seeds, keys):
                    position = f"in segment {segment.index + 1} of {len(segments)}"
                    record = finished.get(segment.index)
                    reused = record is not None and record.cache_key == segment_key
                    if reused:
                        wav = storage.get_bytes(record.audio_key)
                    else:
                        started = time.perf_counter()
                        out = synth.synthesize(segment.tokens, voice, speed=item.speed, seed=seed)
                        wav = audio_io.to_wav_bytes(out.audio, out.sample_rate)
                        if quality is None and len(out.audio) >= QUALITY_SAMPLE_S * out.sample_rate:
                            quality = _quality_fields(checks, out, item, voice, synth.clones_voice)
                            judged, longest = segment.index, None
                        elif quality is None and (longest is None or len(out.audio) > len(longest[1].audio)):
                            longest = (segment.index, out)  # judged if no segment is long enough
                        record = SegmentRecord(
                            item_id=item.item_id, index=segment.index, cache_key=segment_key,
                            audio_key=layout.segment_audio(item.item_id, segment.index), sample_rate=out.sample_rate,
                            frames=len(out.audio), first_token=segment.first_token, end_token=segment.end_token,
                            seed=seed, params=out.params, attempts=int(out.params.get("attempts", 1)),
                            asr_wer=out.params.get("asr_wer"), reference_words=out.reference_words,
                            compute_s=round(time.perf_counter() - started, 4))
                        del out

                        def write(audio_key=record.audio_key, data=wav, record_key=layout.segment_record(
                                item.item_id, segment.index), document=record) -> None:
                            storage.put_bytes(audio_key, data)
                            storage.put_json(record_key, document)  # last: its presence means the segment is done

                        writer.submit(write)
                    header = audio_io.read_wav_header(wav[:audio_io.WAV_HEADER_BYTES])
                    if (header.channels, header.sample_width) != (1, 2):
                        raise audio_io.AudioError(f"segment audio is {header.channels} channel(s) of "
                                                  f"{header.sample_width * 8}-bit samples, not 16-bit mono")
                    if master is None:
                        rate = header.sample_rate
                        master = wave.open(path, "wb")
                        master.setnchannels(1)
                        master.setsampwidth(2)
                        master.setframerate(rate)
                    elif header.sample_rate != rate:
                        raise audio_io.AudioError(f"segment audio at {header.sample_rate} Hz, the first at {rate} Hz")
                    master.writeframes(wav[header.data_offset:header.data_offset + header.frames * 2])
                    del wav
                    pause_frames = round(segment.pause_after_ms * rate / 1000)
                    master.writeframes(bytes(2 * pause_frames))
                    start_ms = round(frame * 1000 / rate)
                    spans.append(SegmentSpan(
                        index=segment.index, first_token=segment.first_token, end_token=segment.end_token,
                        start_ms=start_ms, end_ms=round((frame + header.frames) * 1000 / rate), start_frame=frame,
                        frames=header.frames, pause_after_ms=segment.pause_after_ms, paragraph=segment.paragraph,
                        chapter=segment.chapter, seed=seed, audio_key=record.audio_key, reused=reused))
                    if record.reference_words is None:
                        reference = None
                    elif reference is not None:
                        reference.extend(_shifted(record.reference_words, start_ms))
                    first_params = first_params or record.params
                    attempts = max(attempts, record.attempts)
                    if record.asr_wer is not None:
                        wers.append(record.asr_wer)
                    frame += header.frames + pause_frames
            finally:
                if master is not None:
                    master.close()
            position = "joining its segments"
            writer.flush()  # every segment is in S3 before the master that is made of them
            audio_key = storage.upload_file(layout.audio(item.item_id), path)
        reused_count = sum(span.reused for span in spans)
        if quality is None and longest is not None:  # no segment of QUALITY_SAMPLE_S: the longest made
            judged, out = longest
            quality = _quality_fields(checks, out, item, voice, synth.clones_voice)
        if quality is None:  # every segment was reused: no audio was judged in this run
            quality = {"voice_cloning": synth.clones_voice,
                       "quality_notes": ["quality checks not run: every segment was made by an earlier run"]}
        elif checks is not None and len(spans) > 1:
            quality["quality_notes"] = [*quality.get("quality_notes", []),
                                        f"quality checks judged segment {judged + 1} of {len(spans)} (the first "
                                        f"synthesised of at least {QUALITY_SAMPLE_S:g} s, else the longest)"]
        elapsed = time.perf_counter() - t0
        record = SynthesisRecord(
            item_id=item.item_id, status=ItemStatus.SYNTHESIZED, backend=synth.name, audio_key=audio_key,
            sample_rate=rate, audio_seconds=round(frame / rate, 3),
            params={**first_params, **_lexicon_params(item, synth.name), "seed": item.seed, "cache_key": key,
                    "segments": len(spans),
                    "segments_reused": reused_count, "pauses_ms": pause_settings(settings)},
            attempts=attempts, asr_wer=round(sum(wers) / len(wers), 4) if wers else None,
            reference_words=reference, tokens=tokens, compute_s=round(elapsed, 4), segments=spans, **quality)
        status, error = ItemStatus.SYNTHESIZED, None
        log.info("synthesized %s in %d segments (%d reused from an earlier run)", item.item_id, len(spans),
                 reused_count)
    except InfrastructureFault:
        raise
    except Exception as exc:  # the item fails; its finished segments stay for the next run
        elapsed = time.perf_counter() - t0
        log.error("synthesis of %s failed %s: %s", item.item_id, position, traceback.format_exc())
        error = f"{position}: {_error_text(exc)}"
        record = SynthesisRecord(item_id=item.item_id, status=ItemStatus.SYNTHESIS_FAILED, backend=synth.name,
                                 tokens=tokens, compute_s=round(elapsed, 4), error=error)
        status = ItemStatus.SYNTHESIS_FAILED
    clock.compute_s += elapsed
    writer.submit(functools.partial(storage.put_json, layout.synthesis(item.item_id), record))
    return ItemResult(item_id=item.item_id, status=status, error=error)


_QUALITY_FIELDS = ("detected_language", "language_probability", "language_mismatch", "voice_similarity",
                   "voice_cloning", "quality_notes")


def _quality_fields(checks, out, item: ItemSpec, voice, cloning: bool) -> dict:
    """The synthesis record's language and voice-match fields (the gate's similarity when it measured one)."""
    if checks is None:
        return {"voice_cloning": cloning}
    result = checks.check(out.audio, out.sample_rate, item.language, voice.reference_path,
                          similarity=out.params.get("voice_similarity"))
    return {**result.fields(), "voice_cloning": cloning}


# ------------------------------------------------------------------------------------------------------------
# align


def _load_synthesis(storage: Storage, layout: BatchLayout, item_id: str) -> tuple[SynthesisRecord | None, str]:
    """The item's synthesis record, or None and why it cannot be used."""
    record, problem = read_record(storage, layout.synthesis(item_id), SynthesisRecord)
    if problem == "missing":
        return None, "no synthesis record: the synthesis step did not finish it"
    return record, f"synthesis record {storage.uri(layout.synthesis(item_id))} {problem}"


def alignment_cache_key(backend: str, item: ItemSpec, synthesis: SynthesisRecord, audio_etag: str | None,
                        settings: Settings) -> str:
    """What a timing record depends on: the exact audio (its ETag), the script, the backend and its parameters,
    and the quality gate that decides between aligned and needs-fallback."""
    parts = ["alignment", backend, item.language, synthesis.params.get("cache_key"), audio_etag,
             [t.model_dump(exclude_none=True) for t in synthesis.tokens], backend_params(backend, settings),
             settings.max_untimed_ratio, settings.min_mean_score]
    if shaping := get_aligner_class(backend).output_params(settings):  # none: the key stays as it always was
        parts.append(shaping)
    return cache_key(*parts)


@dataclass(frozen=True)
class Settled:
    """An item the align step does no work for: its result stands (synthesis failed, routed to the fallback, or a
    current verdict is reused, ``reused``)."""

    result: ItemResult
    reused: bool = False


@dataclass(frozen=True)
class ToAlign:
    """An item to align: its synthesis, the primary's record when this is the fallback step, and the cache tag."""

    item: ItemSpec
    synthesis: SynthesisRecord
    previous: TimingRecord | None
    tag: str


def align_chunk(storage: Storage, settings: Settings, chunk: ChunkSpec) -> ChunkResult:
    """Time every item of the chunk with its step's aligner: the primary, or the fallback for a fallback chunk.

    As the primary step, items routed to fallback (``timing_method=google`` or ``force_fallback``) are marked
    ``needs_fallback`` without work. As a fallback step, each item records the primary's reason and every backend
    tried; a failure there ends the item as ``timing_failed``.

    A record is reused when it was made from the same inputs (``model`` carries the cache key) and is a verdict:
    aligned, or judged not alignable. A crash or a backend that did not load leaves no key, so a retry redoes it.
    """
    layout = BatchLayout(chunk.batch_id)
    primary = not chunk.fallback
    backend = chunk.step_aligner
    aligner_cls = get_aligner_class(backend)  # an unknown name fails before any work
    step = "align" if primary else "fallback"
    clock = _Clock()
    force = bool(chunk.params.get("force"))
    faults = FaultPlan(step, chunk.chunk_id)
    storage = faults.wrap_storage(storage, layout, chunk, record=functools.partial(layout.timing, backend=backend))
    verdicts = {ItemStatus.ALIGNED, ItemStatus.NEEDS_FALLBACK if primary else ItemStatus.TIMING_FAILED}
    results: list[ItemResult] = []
    todo: list[ToAlign] = []
    skipped = 0

    def examine(item: ItemSpec) -> Settled | ToAlign:
        """What the step does with the item."""
        synthesis, unusable = _load_synthesis(storage, layout, item.item_id)
        if synthesis is None or synthesis.status != ItemStatus.SYNTHESIZED:
            reason = synthesis.error if synthesis else unusable
            return Settled(ItemResult(item_id=item.item_id, status=ItemStatus.SYNTHESIS_FAILED, error=reason))
        if primary and (chunk.timing_method == FALLBACK_ALIGNER or item.item_id in chunk.force_fallback):
            why = (f"timing_method={FALLBACK_ALIGNER} requested" if chunk.timing_method == FALLBACK_ALIGNER
                   else "routed to fallback by force_fallback")
            record = TimingRecord(item_id=item.item_id, status=ItemStatus.NEEDS_FALLBACK, method="none",
                                  attempted=[], fallback_reason=why, language=item.language, words=[])
            key = layout.timing(item.item_id, backend)
            if storage.get_json_or_none(key) != json.loads(record.model_dump_json()):
                storage.put_json(key, record)
            return Settled(ItemResult(item_id=item.item_id, status=record.status, error=why))
        tag = f"{backend}:{alignment_cache_key(backend, item, synthesis, storage.etag(synthesis.audio_key), settings)}"
        existing = None if force else read_record(storage, layout.timing(item.item_id, backend), TimingRecord)[0]
        if existing and existing.model == tag and existing.status in verdicts:
            return Settled(ItemResult(item_id=item.item_id, status=existing.status,
                                      error=existing.fallback_reason if existing.status != ItemStatus.ALIGNED
                                      else None), reused=True)
        previous = None
        if not primary:
            previous = read_record(storage, layout.timing(item.item_id, chunk.aligner), TimingRecord)[0]
        return ToAlign(item, synthesis, previous, tag)

    for planned in storage.map(examine, chunk.items):
        if isinstance(planned, ToAlign):
            todo.append(planned)
        else:
            results.append(planned.result)
            skipped += planned.reused

    loads = 0
    if todo:
        aligner = faults.wrap_backend(aligner_cls(settings), chunk)
        t0 = time.perf_counter()
        load_error = None
        try:
            aligner.load()
        except Exception as exc:
            load_error = f"{backend} could not load: {_error_text(exc)}"
            log.error("%s", load_error)
        clock.load_s = time.perf_counter() - t0
        loads = 1
        # The next items' audio is read and each record written in the background while the model aligns.
        # A long item's audio is not read whole: its windows are read one by one (its segments' audio objects).
        jobs = todo if load_error is None else []

        def read_audio(job: ToAlign) -> bytes | None:
            return None if job.synthesis.segments else storage.get_bytes(job.synthesis.audio_key)

        batch = settings.alignment_batch_size
        try:
            with WriteBehind() as writer, Prefetch(read_audio, jobs, ahead=max(2, batch)) as audio:
                for group in _alignment_groups(todo, batch):
                    if load_error:
                        outcomes = [None] * len(group)
                    elif len(group) > 1:  # several short items in one batched pass of the aligner
                        outcomes = _batched_outcomes(aligner, [(job, _read(audio, n)) for n, job in group], clock)
                    else:
                        n, job = group[0]
                        outcomes = [functools.partial(_aligned_words, aligner, job.item, job.synthesis,
                                                      functools.partial(audio.get, n),
                                                      functools.partial(_segment_windows, storage, job.synthesis),
                                                      batch)]
                    for (_, job), outcome in zip(group, outcomes):
                        item = job.item
                        record = _align_item(aligner, item, job.previous, primary, settings, clock, load_error,
                                             job.tag, outcome, windows=len(job.synthesis.segments))
                        writer.submit(functools.partial(storage.put_json, layout.timing(item.item_id, backend),
                                                        record))
                        results.append(ItemResult(item_id=item.item_id, status=record.status,
                                                  error=record.fallback_reason if record.status != ItemStatus.ALIGNED
                                                  else None))
                        log.info("aligned %s with %s: %s", item.item_id, backend, record.status.value)
        finally:
            aligner.close()
    return clock.result(chunk, step, backend, results, loads, skipped)


def _alignment_groups(todo: list[ToAlign], batch: int):
    """The items in order, as (position, job) groups: up to ``batch`` consecutive short items share one batched
    aligner pass; a long item is a group of its own (its windows are batched instead)."""
    group: list[tuple[int, ToAlign]] = []
    for n, job in enumerate(todo):
        if job.synthesis.segments or batch <= 1:
            if group:
                yield group
                group = []
            yield [(n, job)]
            continue
        group.append((n, job))
        if len(group) == batch:
            yield group
            group = []
    if group:
        yield group


def _read(audio: Prefetch, n: int) -> bytes | Exception:
    """The item's audio, or what reading it failed with (its own failure); an unreachable S3 fails the chunk."""
    try:
        return audio.get(n)
    except InfrastructureFault:
        raise
    except Exception as exc:
        return exc


def _decoded(synthesis: SynthesisRecord, data: bytes | Exception):
    if isinstance(data, Exception):
        raise data
    samples, rate = audio_io.from_wav_bytes(data)
    if synthesis.sample_rate and rate != synthesis.sample_rate:
        raise audio_io.AudioError(f"sample rate {rate} Hz, its record states {synthesis.sample_rate} Hz")
    return samples, rate


def _batched_outcomes(aligner, group: list[tuple[ToAlign, bytes | Exception]], clock: _Clock) -> list:
    """Align a group of short items in one ``align_many`` call; per item, a callable that returns its words (and
    no window problems) or raises what that item alone failed with, as its own alignment would have."""
    outcomes: list = [None] * len(group)
    inputs, positions = [], []
    for k, (job, data) in enumerate(group):
        try:
            samples, rate = _decoded(job.synthesis, data)
        except InfrastructureFault:
            raise
        except Exception as exc:  # this item's audio: its own failure
            outcomes[k] = exc
            continue
        inputs.append((samples, rate, job.synthesis.tokens, job.item.language))
        positions.append(k)
    t0 = time.perf_counter()
    timed = aligner.align_many(inputs) if inputs else []
    share = (time.perf_counter() - t0) / max(len(inputs), 1)
    log.info("aligned %d items in one %s pass", len(inputs), aligner.name)
    clock.compute_s += share * len(inputs)
    for k, result in zip(positions, timed):
        outcomes[k] = result
    return [_outcome(result, share if k in positions else 0.0) for k, result in enumerate(outcomes)]


def _outcome(result, compute_s: float):
    def outcome():
        if isinstance(result, BaseException):
            raise result
        return result, [], compute_s
    return outcome


def _aligned_words(aligner, item: ItemSpec, synthesis: SynthesisRecord, read_audio: Callable[[], bytes | None],
                   windows: Callable[[], object], batch: int) -> tuple[list[WordTiming], list[str], None]:
    """One item's words (and its failed windows): a long item window by window, a short item in one call."""
    if synthesis.segments:
        read_audio()  # nothing was read ahead for it; keeps the read-ahead in step
        words, window_problems = _align_windows(aligner, item, synthesis, windows(), batch)
        if len(window_problems) == len(synthesis.segments):
            raise AlignmentError(f"no window could be aligned ({'; '.join(window_problems[:3])})")
        return words, window_problems, None
    samples, rate = _decoded(synthesis, read_audio())
    return aligner.align(samples, rate, synthesis.tokens, item.language), [], None


def _segment_windows(storage: Storage, synthesis: SynthesisRecord):
    """Each segment of a long item with its window of audio (float32 samples): the segment's own audio object,
    the exact frames it holds in the master, read two windows ahead of the aligner so only a few are in memory.
    (A read stays as cheap at the end of an hour's programme as at its start, on any S3: no ranged reads into a
    large master object, which some S3 servers serve by reading the whole object.)"""
    import numpy as np

    def read(span: SegmentSpan):
        data = storage.get_bytes(span.audio_key)
        header = audio_io.read_wav_header(data[:audio_io.WAV_HEADER_BYTES])
        if (header.channels, header.sample_width, header.sample_rate) != (1, 2, synthesis.sample_rate) or \
                header.frames != span.frames or header.frames_present(len(data)) < header.frames:
            raise audio_io.AudioError(f"segment {span.index + 1} audio {storage.uri(span.audio_key)} is "
                                      f"{header.frames} frames of {header.channels} channel(s), "
                                      f"{header.sample_width * 8}-bit at {header.sample_rate} Hz; the item's record "
                                      f"states {span.frames} frames of 16-bit mono at {synthesis.sample_rate} Hz")
        pcm = data[header.data_offset:header.data_offset + 2 * header.frames]
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0

    with Prefetch(read, synthesis.segments) as windows:
        for n, span in enumerate(synthesis.segments):
            yield span, windows.get(n)


def _align_windows(aligner, item: ItemSpec, synthesis: SynthesisRecord, windows, batch: int = 1
                   ) -> tuple[list[WordTiming], list[str]]:
    """One continuous word track of a long item: each segment's tokens aligned in its own window of the master
    and shifted by the window's start, so an error never carries into the next window. With ``batch`` > 1 that
    many windows go to the aligner in one ``align_many`` call. A window the aligner cannot align leaves its words
    untimed (the quality gate judges the whole item); (words, window problems)."""
    words: list[WordTiming] = []
    problems: list[str] = []

    def settle(pending: list) -> None:
        inputs = [(samples, synthesis.sample_rate, synthesis.tokens[span.first_token:span.end_token], item.language)
                  for span, samples in pending]
        if batch > 1:
            timed_windows = aligner.align_many(inputs)
        else:
            timed_windows = []
            for window in inputs:
                try:
                    timed_windows.append(aligner.align(*window))
                except AlignmentError as exc:
                    timed_windows.append(exc)
        for (span, _), (_, _, tokens, _), timed in zip(pending, inputs, timed_windows):
            if isinstance(timed, AlignmentError):
                problems.append(f"segment {span.index + 1}: {timed}")
                timed = [WordTiming.of(t, None, None, None, source=aligner.name) for t in tokens]
            elif isinstance(timed, BaseException):
                raise timed  # a crash stays a crash: the item is retried
            words.extend(_shifted(timed, span.start_ms))

    pending: list = []
    for window in windows:
        pending.append(window)
        if len(pending) >= batch:
            settle(pending)
            pending = []
    if pending:
        settle(pending)
    return words, problems


def _align_item(aligner, item, previous: TimingRecord | None, primary: bool, settings: Settings, clock: _Clock,
                load_error: str | None, tag: str, outcome: Callable[[], tuple] | None, windows: int = 0
                ) -> TimingRecord:
    """The item's timing record from ``outcome()``: (words, failed windows, compute seconds or None to time the
    call here), or what it raised. An AlignmentError is a verdict (needs the fallback); a crash is retried."""
    attempted = (previous.attempted if previous else []) + [aligner.name]
    earlier_reason = previous.fallback_reason if previous else None
    failed_status = ItemStatus.NEEDS_FALLBACK if primary else ItemStatus.TIMING_FAILED
    base = dict(item_id=item.item_id, attempted=attempted, resolution_ms=aligner.resolution_ms,
                language=item.language)

    def failed(reason: str, words=None, compute_s=0.0, verdict: bool = True) -> TimingRecord:
        # Only a verdict carries the cache key; a crash is retried by the next run of the step.
        full = f"{earlier_reason}; then {aligner.name}: {reason}" if earlier_reason else f"{aligner.name}: {reason}"
        return TimingRecord(status=failed_status, method=aligner.name, fallback_reason=full, words=words or [],
                            compute_s=round(compute_s, 4), error=reason, model=tag if verdict else None, **base)

    if load_error:
        return failed(load_error, verdict=False)
    t0 = time.perf_counter()
    try:
        words, window_problems, batched_s = outcome()
    except InfrastructureFault:
        raise  # storage failed, not the item: the whole chunk fails (and is retried)
    except AlignmentError as exc:
        clock.compute_s += time.perf_counter() - t0
        return failed(str(exc), compute_s=time.perf_counter() - t0)
    except Exception as exc:  # a backend crash on one item reroutes only that item
        log.error("alignment of %s with %s crashed: %s", item.item_id, aligner.name, traceback.format_exc())
        clock.compute_s += time.perf_counter() - t0
        return failed(_error_text(exc), compute_s=time.perf_counter() - t0, verdict=False)
    if batched_s is None:
        elapsed = time.perf_counter() - t0
        clock.compute_s += elapsed
    else:  # its share of a batched pass, already on the clock
        elapsed = batched_s
    problem = quality_problem(words, settings)
    if problem:
        if window_problems:
            problem += f" ({len(window_problems)} of {windows} windows failed: {window_problems[0]})"
        return failed(problem, words, elapsed)
    return TimingRecord(status=ItemStatus.ALIGNED, method=aligner.name, fallback_reason=earlier_reason,
                        words=words, compute_s=round(elapsed, 4), model=tag, **base)
