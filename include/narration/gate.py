"""Intelligibility gate: transcribe synthesized speech with faster-whisper and score it by WER against the script.

F5-TTS sometimes skips or repeats words; ``synthesize_with_gate`` re-samples with new seeds and keeps the best take.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from narration.audio import resample
from narration.devices import ctranslate2_compute_type, release_gpu_memory, resolve_device
from narration.normalize import normalize_script, spoken_text
from narration.schema import ScriptToken
from narration.settings import Settings
from narration.synth.base import Synthesis, SynthesisRequest, Synthesizer, Voice

log = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16000
SHARED_LANGUAGE_MODEL = "language-id"  # NARRATION_GATE_ASR_MODEL value: reuse the language check's model


class GateSettings(BaseSettings):
    """``NARRATION_GATE_*``: the ASR model and the re-synthesis policy."""

    model_config = SettingsConfigDict(env_prefix="NARRATION_GATE_", extra="ignore")

    asr_model: str | None = Field(
        None, description="CTranslate2 Whisper model dir (faster-whisper format), or 'language-id': the "
        "multilingual model the language check loaded (one load for both). Default <model_dir>/faster-whisper-small.en")
    compute_type: str = Field("auto", description="auto (float16 on CUDA, int8 on CPU) or any CTranslate2 type.")
    beam_size: int = Field(5, ge=1)
    cpu_threads: int = Field(0, ge=0, description="0 = CTranslate2's default.")
    enabled: bool = Field(False, description="Run the gate after every synthesis (needs the whisperx extra).")
    max_attempts: int = Field(3, ge=1, description="Syntheses tried per item before keeping the best.")
    wer_threshold: float = Field(0.2, ge=0, description="A take at or below this WER is accepted at once.")


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of ``hypothesis`` against ``reference``, both normalised the same way (numbers spelled out)."""
    import jiwer

    ref = spoken_text(normalize_script(reference))
    hyp = spoken_text(normalize_script(hypothesis))
    if not ref:
        raise ValueError("WER needs a non-empty reference")
    return float(jiwer.wer(ref, hyp)) if hyp else 1.0


class IntelligibilityGate:
    """Loads a faster-whisper model once (per chunk) and scores audio against the script it should say."""

    def __init__(self, settings: Settings, gate_settings: GateSettings | None = None):
        self.settings = settings
        self.gate = gate_settings or GateSettings()
        self.model = None
        self.device: str | None = None
        self.shared_path: Path | None = None
        self.load_s = 0.0

    @property
    def model_path(self) -> Path:
        if self.shared_path is not None:
            return self.shared_path
        return Path(self.gate.asr_model or Path(self.settings.model_dir) / "faster-whisper-small.en")

    def use_model(self, model, path: Path) -> None:
        """Score with an already loaded faster-whisper model (the language check's)."""
        self.model = model
        self.shared_path = path

    def load(self) -> None:
        if self.model is not None:
            return
        if self.gate.asr_model == SHARED_LANGUAGE_MODEL:
            raise FileNotFoundError(f"NARRATION_GATE_ASR_MODEL={SHARED_LANGUAGE_MODEL} needs the language check's "
                                    "model loaded (NARRATION_QUALITY_LANGUAGE_ID=true and its model installed)")
        if not (self.model_path / "model.bin").is_file():
            raise FileNotFoundError(f"no faster-whisper model at {self.model_path} (set NARRATION_GATE_ASR_MODEL)")
        from faster_whisper import WhisperModel

        started = time.perf_counter()
        self.device = resolve_device(self.settings.device)
        kind, _, index = self.device.partition(":")
        self.model = WhisperModel(
            str(self.model_path), device=kind, device_index=int(index or 0),
            compute_type=ctranslate2_compute_type(self.device, self.gate.compute_type),
            cpu_threads=self.gate.cpu_threads, local_files_only=True,
        )
        self.load_s = time.perf_counter() - started

    def close(self) -> None:
        self.model = None
        if self.device:
            release_gpu_memory(self.device)

    def transcribe(self, audio: np.ndarray, sample_rate: int, language: str = "en") -> str:
        self.load()
        audio16 = resample(np.asarray(audio, dtype=np.float32), sample_rate, ASR_SAMPLE_RATE)
        segments, _ = self.model.transcribe(
            audio16, language=language, beam_size=self.gate.beam_size, condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()

    def score(self, audio: np.ndarray, sample_rate: int, tokens: list[ScriptToken],
              language: str = "en") -> tuple[float, str]:
        """(WER, transcript) of ``audio`` against the normalised script ``tokens``."""
        transcript = self.transcribe(audio, sample_rate, language)
        return word_error_rate(spoken_text(tokens), transcript), transcript


def synthesize_with_gate(
    synth: Synthesizer,
    gate: IntelligibilityGate,
    tokens: list[ScriptToken],
    voice: Voice,
    *,
    max_attempts: int,
    wer_threshold: float,
    seed: int | None = None,
    speed: float = 1.0,
    similarity: Callable[[Synthesis], float | None] | None = None,
    min_similarity: float | None = None,
) -> tuple[Synthesis, int, float]:
    """Synthesize with seeds ``seed, seed+1, ...`` until a take's WER <= ``wer_threshold`` (and, when
    ``min_similarity`` is given, its voice ``similarity`` >= it) or ``max_attempts``.

    Returns the best take (lowest WER, then highest similarity), the number of attempts made and that take's
    WER; the take's params record every attempt's seed, WER and similarity.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    base_seed = seed if seed is not None else random.randint(0, 2**31 - 1)
    best: tuple[float, float, Synthesis] | None = None
    tried: list[dict] = []
    for attempt in range(max_attempts):
        take = synth.synthesize(tokens, voice, speed=speed, seed=base_seed + attempt)
        wer, transcript = gate.score(take.audio, take.sample_rate, tokens, voice.language)
        tried.append({"seed": take.params.get("seed", base_seed + attempt), "wer": round(wer, 4)})
        sim = similarity(take) if similarity is not None else None
        if similarity is not None:
            take.params["voice_similarity"] = sim
            tried[-1]["voice_similarity"] = round(sim, 4) if sim is not None else None
        log.info("attempt %d seed %s: WER %.3f similarity %s (%r)", attempt + 1, tried[-1]["seed"], wer, sim,
                 transcript)
        rank = -sim if sim is not None else (1.0 if similarity is not None else 0.0)  # unmeasurable ranks last
        if best is None or (wer, rank) < best[:2]:
            best = (wer, rank, take)
        if wer <= wer_threshold and (min_similarity is None or (sim is not None and sim >= min_similarity)):
            break
    wer, _, take = best
    take.params.update({"asr_wer": round(wer, 4), "gate_attempts": tried, "gate_model": gate.model_path.name})
    return take, len(tried), wer


class GatedSynthesizer:
    """A synthesizer whose every item passes the gate: one model load each for synthesizer and ASR per chunk.
    With ``checks`` whose ``min_voice_similarity`` is set, a cloning synthesizer's takes must match the voice too."""

    def __init__(self, synth: Synthesizer, gate: IntelligibilityGate, checks=None):
        self.synth = synth
        self.gate = gate
        self.checks = checks
        self.name = synth.name
        self.clones_voice = synth.clones_voice

    def load(self) -> None:
        """Load the synthesizer and the gate's ASR; call after the quality checks' load, whose multilingual
        model the gate reuses with NARRATION_GATE_ASR_MODEL=language-id."""
        self.synth.load()
        language = self.checks.language if self.checks is not None else None
        if self.gate.gate.asr_model == SHARED_LANGUAGE_MODEL and language is not None:
            self.gate.use_model(language.model, language.path)
        self.gate.load()

    def prepare(self, requests: list[SynthesisRequest]) -> None:
        self.synth.prepare(requests)  # first takes use the items' own seeds: batched; retakes go one at a time

    def synthesize(self, tokens: list[ScriptToken], voice: Voice, *, speed: float = 1.0,
                   seed: int | None = None) -> Synthesis:
        threshold = self.checks.quality.min_voice_similarity if self.checks is not None else None
        similarity = None
        if threshold is not None and self.clones_voice:
            def similarity(take: Synthesis) -> float | None:
                return self.checks.voice_similarity(take.audio, take.sample_rate, voice.reference_path)
        take, attempts, _ = synthesize_with_gate(
            self.synth, self.gate, tokens, voice, max_attempts=self.gate.gate.max_attempts,
            wer_threshold=self.gate.gate.wer_threshold, seed=seed, speed=speed, similarity=similarity,
            min_similarity=threshold if similarity else None)
        take.params["attempts"] = attempts
        return take

    def close(self) -> None:
        try:
            self.gate.close()
        finally:
            self.synth.close()
