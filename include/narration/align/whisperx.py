"""WhisperX forced alignment (wav2vec2 CTC, 20 ms frames) of the KNOWN normalised script, sentence by sentence.

Times come back on the script's own tokens; a quality gate raises AlignmentError so the item goes to the fallback.
With ``alignment_batch_size`` > 1 each item's wav2vec2 emissions come from one forward pass over its whole audio,
several items padded into one batch, and whisperx.align reads each sentence window's frames from them.
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
# wav2vec2's convolutional front end (every wav2vec2/HuBERT CTC model whisperx uses): 320 samples = one 20 ms frame.
_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
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


def emission_frames(samples: int, kernels=_CONV_KERNELS, strides=_CONV_STRIDES) -> int:
    """Frames wav2vec2's front end makes of ``samples`` audio samples."""
    for kernel, stride in zip(kernels, strides):
        samples = (samples - kernel) // stride + 1
    return max(samples, 0)


class _Emissions:
    """Stands in for the alignment model inside whisperx.align: serves each window's frames from emissions
    computed over the whole item. ``start`` is set to the window's first sample before each align() call; the
    waveform whisperx passes must be the item's audio from there, or whisperx changed how it slices."""

    def __init__(self, logits, audio, model_type: str, frames_of):
        self.logits, self.audio, self.model_type, self.frames_of = logits, audio, model_type, frames_of
        self.start = 0

    def __call__(self, waveform, lengths=None):
        from types import SimpleNamespace

        import torch

        size = int(lengths[0]) if lengths is not None else waveform.shape[-1]
        expected = self.audio[self.start:self.start + size]
        if not torch.equal(waveform[0, :size].cpu(), expected):
            raise AlignmentError("whisperx passed a window that is not the item's audio at its start time")
        first = self.start // 320
        logits = self.logits[None, first:first + max(self.frames_of(waveform.shape[-1]), 1)]
        return (logits, None) if self.model_type == "torchaudio" else SimpleNamespace(logits=logits)


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

    @classmethod
    def output_params(cls, settings: Settings) -> dict:
        """Batched emissions come from whole-item passes, and wav2vec2-base normalises over time, padding included:
        an item's timings depend on the batch settings (and shift slightly with its batch partners)."""
        if settings.alignment_batch_size == 1:
            return {}
        return {"alignment_batch_size": settings.alignment_batch_size, "alignment_batch_s": settings.alignment_batch_s}

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

    def _frames_of(self, model):
        """Frame count for a sample count: the HF model's own conv config, else wav2vec2's."""
        config = getattr(getattr(model, "inner", model), "config", None)
        kernels = tuple(getattr(config, "conv_kernel", _CONV_KERNELS))
        strides = tuple(getattr(config, "conv_stride", _CONV_STRIDES))
        return lambda samples: emission_frames(samples, kernels, strides)

    def emissions(self, audios: list[np.ndarray], model, metadata) -> list[Any]:
        """Each 16 kHz item's logits (frames, vocab) on CPU, from batched forward passes over whole items: up to
        ``alignment_batch_size`` items of similar length, padded with silence, at most ``alignment_batch_s``
        seconds of padded audio per pass. wav2vec2-base normalises over time, so padding shifts a short row's
        emissions slightly; sorting by length keeps the padding small."""
        import torch

        frames_of = self._frames_of(model)
        size, cap = self.settings.alignment_batch_size, self.settings.alignment_batch_s * SAMPLE_RATE
        order = sorted(range(len(audios)), key=lambda n: len(audios[n]))
        batches: list[list[int]] = []
        for n in order:
            if batches and len(batches[-1]) < size and (len(batches[-1]) + 1) * len(audios[n]) <= cap:
                batches[-1].append(n)
            else:
                batches.append([n])
        out: list[Any] = [None] * len(audios)
        for batch in batches:
            longest = max(len(audios[n]) for n in batch)
            waves = torch.zeros(len(batch), longest)
            for row, n in enumerate(batch):
                waves[row, :len(audios[n])] = torch.from_numpy(audios[n])
            with torch.inference_mode():
                waves = waves.to(self.device)
                if metadata["type"] == "torchaudio":
                    lengths = torch.tensor([len(audios[n]) for n in batch], device=self.device)
                    logits, _ = model(waves, lengths=lengths)
                else:
                    logits = model(waves).logits
            logits = logits.float().cpu()
            for row, n in enumerate(batch):
                out[n] = logits[row, :frames_of(len(audios[n]))]
        return out

    def _align_segment(self, text: str, start_s: float, end_s: float, model, metadata, audio) -> list[dict]:
        import whisperx

        if isinstance(model, _Emissions):
            model.start = int(start_s * SAMPLE_RATE)  # the first sample whisperx.align cuts for this window
        try:
            result = whisperx.align([{"text": text, "start": start_s, "end": end_s}], model, metadata, audio,
                                    self.device, interpolate_method=self.wx.interpolate_method)
        except Exception as exc:  # CUDA OOM, tensor shape errors...: the item goes to the fallback
            raise AlignmentError(f"whisperx align failed: {type(exc).__name__}: {exc}") from exc
        return [w for segment in result["segments"] for w in segment["words"]]

    def align(
        self, audio: np.ndarray, sample_rate: int, tokens: list[ScriptToken], language: str
    ) -> list[WordTiming]:
        result = self.align_many([(audio, sample_rate, tokens, language)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def align_many(self, items: list[tuple[np.ndarray, int, list[ScriptToken], str]]
                   ) -> list[list[WordTiming] | Exception]:
        """Each item's timings, or the error that item alone failed with. With ``alignment_batch_size`` > 1 the
        items' emissions are computed in batched whole-item passes; else each sentence window is one pass."""
        self.load()
        results: list[list[WordTiming] | Exception | None] = [None] * len(items)
        audios: dict[int, np.ndarray] = {}
        for n, (audio, sample_rate, tokens, _) in enumerate(items):
            if not tokens:
                results[n] = []
                continue
            audios[n] = resample(np.asarray(audio, dtype=np.float32), sample_rate, SAMPLE_RATE)
            if len(audios[n]) == 0:
                results[n] = AlignmentError("empty audio")
                del audios[n]
        for language in dict.fromkeys(items[n][3] for n in audios):
            indices = [n for n in audios if items[n][3] == language]
            try:
                model, metadata = self._load_language(language)
            except AlignmentError as exc:
                for n in indices:
                    results[n] = exc
                continue
            served: dict[int, Any] = {n: model for n in indices}
            if self.settings.alignment_batch_size > 1:
                import torch

                try:
                    logits = self.emissions([audios[n] for n in indices], model, metadata)
                except Exception as exc:  # CUDA OOM, shape errors: these items go to the fallback
                    logits = [AlignmentError(f"whisperx emissions failed: {type(exc).__name__}: {exc}")] * len(
                        indices)
                for n, emission in zip(indices, logits):
                    served[n] = emission if isinstance(emission, Exception) else _Emissions(
                        emission, torch.from_numpy(audios[n]), metadata["type"], self._frames_of(model))
            for n in indices:
                if isinstance(served[n], Exception):
                    results[n] = served[n]
                    continue
                try:
                    results[n] = self._align_item(audios[n], items[n][2], served[n], metadata)
                except Exception as exc:  # align() re-raises it as it is: a crash stays a crash
                    results[n] = exc
        return results

    def _align_item(self, audio16: np.ndarray, tokens: list[ScriptToken], model, metadata) -> list[WordTiming]:
        duration = len(audio16) / SAMPLE_RATE

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
