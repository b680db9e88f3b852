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
from narration.lexicons import apply_pronunciations
from narration.normalize import normalize_script
from narration.schema import (
    ChunkResult,
    ChunkSpec,
    ItemResult,
    ItemSpec,
    ItemStatus,
    SynthesisRecord,
    TimingRecord,
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


def _tokens(item: ItemSpec):
    return apply_pronunciations(normalize_script(item.text, item.locale), item.pronunciations, item.locale)


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
        checks.load()  # first: the gate can reuse its multilingual Whisper
        synth.load()
        clock.load_s = time.perf_counter() - t0
        loads = 1
        try:
            # Each item's audio and record go to S3 in the background while the model speaks the next item.
            with tempfile.TemporaryDirectory(prefix="narration-voices-") as voice_dir, WriteBehind() as writer:
                _announce(storage, synth, [item for item, _ in todo], voice_dir)
                for item, key in todo:
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
    (a backend that takes no phonemes speaks a phoneme entry's word as written)."""
    if not item.pronunciations:
        return {}
    takes_phonemes = get_synthesizer_class(backend).takes_phonemes
    notes = []
    for p in item.pronunciations:
        if p.alias is not None:
            notes.append(f"{p.grapheme}: alias {p.alias!r} ({p.lexicon})")
        elif takes_phonemes:
            notes.append(f"{p.grapheme}: phonemes /{p.phonemes}/ spoken by {backend} ({p.lexicon})")
        else:
            notes.append(f"{p.grapheme}: phoneme entry /{p.phonemes}/ not applied: {backend} takes words only, "
                         f"so the word is read as written ({p.lexicon})")
    return {"lexicon_entries": notes}


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
    return cache_key("alignment", backend, item.language, synthesis.params.get("cache_key"), audio_etag,
                     [t.model_dump(exclude_none=True) for t in synthesis.tokens], backend_params(backend, settings),
                     settings.max_untimed_ratio, settings.min_mean_score)


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
        audio_keys = [job.synthesis.audio_key for job in todo] if load_error is None else []
        try:
            with WriteBehind() as writer, Prefetch(storage.get_bytes, audio_keys) as audio:
                for n, job in enumerate(todo):
                    item = job.item
                    record = _align_item(aligner, item, job.synthesis, job.previous, primary, settings, clock,
                                         load_error, job.tag, read_audio=functools.partial(audio.get, n))
                    writer.submit(functools.partial(storage.put_json, layout.timing(item.item_id, backend), record))
                    results.append(ItemResult(item_id=item.item_id, status=record.status,
                                              error=record.fallback_reason if record.status != ItemStatus.ALIGNED
                                              else None))
                    log.info("aligned %s with %s: %s", item.item_id, backend, record.status.value)
        finally:
            aligner.close()
    return clock.result(chunk, step, backend, results, loads, skipped)


def _align_item(aligner, item, synthesis: SynthesisRecord, previous: TimingRecord | None, primary: bool,
                settings: Settings, clock: _Clock, load_error: str | None, tag: str,
                read_audio: Callable[[], bytes]) -> TimingRecord:
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
        samples, rate = audio_io.from_wav_bytes(read_audio())
        if synthesis.sample_rate and rate != synthesis.sample_rate:
            raise audio_io.AudioError(f"sample rate {rate} Hz, its record states {synthesis.sample_rate} Hz")
        words = aligner.align(samples, rate, synthesis.tokens, item.language)
    except InfrastructureFault:
        raise  # storage failed, not the item: the whole chunk fails (and is retried)
    except AlignmentError as exc:
        clock.compute_s += time.perf_counter() - t0
        return failed(str(exc), compute_s=time.perf_counter() - t0)
    except Exception as exc:  # a backend crash on one item reroutes only that item
        log.error("alignment of %s with %s crashed: %s", item.item_id, aligner.name, traceback.format_exc())
        clock.compute_s += time.perf_counter() - t0
        return failed(_error_text(exc), compute_s=time.perf_counter() - t0, verdict=False)
    elapsed = time.perf_counter() - t0
    clock.compute_s += elapsed
    problem = quality_problem(words, settings)
    if problem:
        return failed(problem, words, elapsed)
    return TimingRecord(status=ItemStatus.ALIGNED, method=aligner.name, fallback_reason=earlier_reason,
                        words=words, compute_s=round(elapsed, 4), model=tag, **base)
