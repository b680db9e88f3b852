"""WhisperX forced alignment (wav2vec2 CTC, 20 ms frames) of the KNOWN normalised script, sentence by sentence.

Times come back on the script's own tokens; a quality gate raises AlignmentError so the item goes to the fallback.
whisperx and torch are imported inside ``load()``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from narration.align.base import Aligner, AlignmentError, quality_problem
from narration.audio import resample
from narration.devices import float_precision, release_gpu_memory, resolve_device, torch_dtype
from narration.normalize import sentences as split_sentences
from narration.schema import ScriptToken, WordTiming
from narration.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # whisperx.align assumes 16 kHz
# Files of an NLTK punkt_tab language; empty files are an untrained Punkt (we already split sentences ourselves).
_PUNKT_TAB_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


class WhisperXSettings(BaseSettings):
    """``NARRATION_WHISPERX_*``: alignment model locations and sentence-window tuning."""

    model_config = SettingsConfigDict(env_prefix="NARRATION_WHISPERX_", extra="ignore")

    align_model: str | None = Field(
        None, description="Local wav2vec2 CTC model dir (or HF name) for every language; None = whisperx's "
        "default for the language (a torchaudio/HF download into cache_dir).")
    align_models: dict[str, str] = Field(default_factory=dict, description="Per-language overrides (JSON).")
    cache_dir: str | None = Field(
        None, description="Download/cache dir for default models. Default <model_dir>/whisperx")
    nltk_data: str | None = Field(None, description="NLTK_DATA dir to use or create when punkt_tab is missing.")
    precision: str = Field("auto", description="auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16")
    interpolate_method: str = Field("nearest", description="How whisperx times words without alignable chars.")
    window_pad_s: float = Field(0.5, ge=0, description="Audio added before/after a sentence's estimated window.")
    window_slack: float = Field(0.25, ge=0, description="Relative extra length of a sentence's estimated window.")


def ensure_punkt_tab(language: str, configured_dir: str | None = None) -> str | None:
    """Make NLTK find punkt_tab for ``language`` offline; returns the dir created, or None if one was found.

    whisperx.align re-splits each segment with Punkt and downloads punkt_tab on a miss. Our segments are single
    sentences without punctuation, so an untrained (empty) Punkt splits them identically; images that can
    download the real model at build time should do so.
    """
    import nltk
    from whisperx.utils import PUNKT_LANGUAGES

    punkt_language = PUNKT_LANGUAGES.get(language, "english")
    try:
        nltk.data.find(f"tokenizers/punkt_tab/{punkt_language}/")
        return None
    except LookupError:
        pass
    root = Path(configured_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "narration"
                / "nltk_data")
    folder = root / "tokenizers" / "punkt_tab" / punkt_language
    folder.mkdir(parents=True, exist_ok=True)
    for name in _PUNKT_TAB_FILES:
        (folder / name).touch()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return str(root)


def _reduced_precision(model, dtype):
    """Run ``model`` in float16/bfloat16: whisperx.align feeds float32 audio and expects float32 emissions."""
    import torch

    class ReducedPrecision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model.to(dtype)

        def forward(self, waveform, *args, **kwargs):
            out = self.inner(waveform.to(dtype), *args, **kwargs)
            if isinstance(out, tuple):  # torchaudio bundles: (emissions, lengths)
                return (out[0].float(), *out[1:])
            out.logits = out.logits.float()  # transformers CTC output
            return out

    return ReducedPrecision().eval()


class WhisperXAligner(Aligner):
    """Aligns the known script with ``whisperx.align``: one segment per sentence, windows chained on real times.

    Windows: a sentence starts where the previous one's last timed word ended (minus ``window_pad_s``) and lasts
    its share of the remaining audio by character count (plus slack and pad); the last sentence runs to the end.
    This bounds the audio each CTC pass sees (long segments exhaust memory, whisperX #311) and stops drift from
    carrying across sentences; a sentence whose window misses its speech comes back poorly scored or untimed.
    """

    name = "whisperx"
    resolution_ms = 20

    def __init__(self, settings: Settings, whisperx_settings: WhisperXSettings | None = None):
        super().__init__(settings)
        self.wx = whisperx_settings or WhisperXSettings()
        self.device: str | None = None
        self.precision: str | None = None
        self._models: dict[str, tuple[Any, dict]] = {}
        self.load_s = 0.0

    def _model_name(self, language: str) -> str | None:
        return self.wx.align_models.get(language) or self.wx.align_model

    def _load_language(self, language: str) -> tuple[Any, dict]:
        if language in self._models:
            return self._models[language]
        import whisperx

        started = time.perf_counter()
        ensure_punkt_tab(language, self.wx.nltk_data)
        model_name = self._model_name(language)
        local = model_name is not None and Path(model_name).is_dir()
        cache_dir = self.wx.cache_dir or str(Path(self.settings.model_dir) / "whisperx")
        try:
            model, metadata = whisperx.load_align_model(
                language, self.device, model_name=model_name, model_dir=cache_dir, model_cache_only=local)
        except Exception as exc:
            raise AlignmentError(f"whisperx could not load an alignment model for {language!r} "
                                 f"({model_name or 'default'}): {exc}") from exc
        if self.precision != "float32":
            model = _reduced_precision(model, torch_dtype(self.precision))
        self._models[language] = (model, metadata)
        self.model = Path(model_name).name if local else (model_name or f"whisperx-default-{language}")
        self.load_s += time.perf_counter() - started
        log.info("whisperx align model %s (%s) loaded on %s/%s", self.model, language, self.device, self.precision)
        return model, metadata

    def load(self) -> None:
        if self.device is None:
            self.device = resolve_device(self.settings.device)
            self.precision = float_precision(self.device, self.wx.precision)
        self._load_language(self.settings.default_language)

    def close(self) -> None:
        self._models.clear()
        if self.device:
            release_gpu_memory(self.device)

    # -- alignment ---------------------------------------------------------------------------------------

    def _align_segment(self, text: str, start_s: float, end_s: float, model, metadata, audio) -> list[dict]:
        import whisperx

        try:
            result = whisperx.align([{"text": text, "start": start_s, "end": end_s}], model, metadata, audio,
                                    self.device, interpolate_method=self.wx.interpolate_method)
        except Exception as exc:  # CUDA OOM, tensor shape errors...: the item goes to the fallback
            raise AlignmentError(f"whisperx align failed: {type(exc).__name__}: {exc}") from exc
        return [w for segment in result["segments"] for w in segment["words"]]

    def align(
        self, audio: np.ndarray, sample_rate: int, tokens: list[ScriptToken], language: str
    ) -> list[WordTiming]:
        if not tokens:
            return []
        self.load()
        model, metadata = self._load_language(language)
        audio16 = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
        duration = len(audio16) / SAMPLE_RATE
        if duration <= 0:
            raise AlignmentError("empty audio")

        sentences = split_sentences(tokens)
        texts = [" ".join(w for t in sentence for w in t.spoken) for sentence in sentences]
        remaining_chars = sum(len(t) for t in texts)
        cursor = 0.0  # where the next sentence is expected to start
        # Per token: (start, end, [scores]) over its spoken words, from whisperx's word list.
        spans: dict[int, list[tuple[float | None, float | None, float | None]]] = {}
        for i, (sentence, text) in enumerate(zip(sentences, texts)):
            estimate = (duration - cursor) * len(text) / max(remaining_chars, 1)
            remaining_chars -= len(text)
            start_s = max(0.0, cursor - self.wx.window_pad_s)
            last = i == len(sentences) - 1
            end_s = duration if last else min(duration, cursor + estimate * (1 + self.wx.window_slack)
                                              + self.wx.window_pad_s)
            words = self._align_segment(text, start_s, end_s, model, metadata, audio16)
            expected = [(t.index, w) for t in sentence for w in t.spoken]
            for (index, word), got in zip(expected, _match_words([w for _, w in expected], words)):
                spans.setdefault(index, []).append(got)
            ends = [e for t in sentence for _, e, _ in spans.get(t.index, []) if e is not None]
            cursor = max(ends) if ends else min(duration, cursor + estimate)

        timings = _to_word_timings(tokens, spans)
        self._quality_gate(timings)
        return timings

    def _quality_gate(self, timings: list[WordTiming]) -> None:
        if problem := quality_problem(timings, self.settings):
            raise AlignmentError(problem)


def _number(value) -> float | None:
    """whisperx gives numpy floats (or NaN) or nothing; JSON wants plain floats."""
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else value


def _match_words(expected: list[str], words: list[dict]) -> list[tuple[float | None, float | None, float | None]]:
    """(start, end, score) for each expected word, in order; words whisperx lost or renamed stay untimed."""
    matched: list[tuple[float | None, float | None, float | None]] = []
    position = 0
    for word in expected:
        found = next((k for k in range(position, len(words)) if words[k].get("word") == word), None)
        if found is None:
            matched.append((None, None, None))
            continue
        position = found + 1
        w = words[found]
        matched.append((_number(w.get("start")), _number(w.get("end")), _number(w.get("score"))))
    return matched


def _to_word_timings(tokens: list[ScriptToken], spans: dict) -> list[WordTiming]:
    """One WordTiming per token: start of its first timed word, end of its last, mean score; kept in order."""
    timings: list[WordTiming] = []
    previous_end = 0
    for token in tokens:
        words = spans.get(token.index, [])
        starts = [s for s, _, _ in words if s is not None]
        ends = [e for _, e, _ in words if e is not None]
        scores = [c for _, _, c in words if c is not None]
        start_ms = end_ms = None
        if starts and ends:
            # Sentence windows overlap by the pad: never let a word start before the previous one ended.
            start_ms = max(round(starts[0] * 1000), previous_end)
            end_ms = max(round(ends[-1] * 1000), start_ms)
            previous_end = end_ms
        timings.append(WordTiming.of(token, start_ms, end_ms, round(sum(scores) / len(scores), 4) if scores else None,
                                     source="whisperx"))
    return timings
