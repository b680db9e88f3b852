"""F5-TTS voice-cloning synthesizer (the production GPU backend): 24 kHz speech in a reference voice.

One loading path serves the real F5TTS_v1_Base checkpoint and tiny test checkpoints: f5_tts's own ``load_model`` +
``load_vocoder``, with every file local (no hub access). Generation follows f5_tts's ``infer_batch_process`` (same
reference preparation, duration estimate and vocoder step) but puts the sentence groups of several items into one
``CFM.sample()`` call; each group's noise comes from its own generator seeded by the item's seed, so an item sounds
the same alone or in a batch. f5_tts is imported inside ``load()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from narration.devices import release_gpu_memory, resolve_device
from narration.errors import ItemFault
from narration.normalize import pause_mark, sentences
from narration.schema import ScriptToken
from narration.settings import Settings
from narration.synth.base import Synthesis, SynthesisRequest, Synthesizer, Voice

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000  # F5-TTS / Vocos mel-24khz output rate: the master audio
# F5 fits reference + generated speech into one ~22 s context; it sizes text batches with this (utils_infer).
_CONTEXT_S = 22.0


class F5TTSError(ItemFault, RuntimeError):
    """Configuration or input F5-TTS cannot work with (missing files, bad reference voice)."""


class F5TTSSettings(BaseSettings):
    """``NARRATION_F5TTS_*``: model files (local paths only) and sampling parameters."""

    model_config = SettingsConfigDict(env_prefix="NARRATION_F5TTS_", extra="ignore")

    checkpoint: str | None = Field(
        None, description="Model checkpoint (.safetensors or .pt). Default: <model_dir>/f5tts/F5TTS_v1_Base/"
        "model_1250000.safetensors")
    vocab_file: str | None = Field(None, description="vocab.txt. Default: the v1 Base vocab packaged with f5_tts.")
    vocoder_dir: str | None = Field(
        None, description="Vocos dir with config.yaml + pytorch_model.bin. Default: <model_dir>/vocos-mel-24khz")
    config_name: str = Field("F5TTS_v1_Base", description="Packaged f5_tts config whose model.arch is used.")
    architecture: dict[str, Any] | None = Field(
        None, description="DiT arguments as JSON; overrides config_name's arch (tiny test models).")
    nfe_step: int = Field(32, ge=1, description="Flow-matching steps per generation (F5's NFE); cost scales "
                          "with it. The paper's settings: 32, 16, and 7 with EPSS.")
    cfg_strength: float = 2.0
    sway_sampling_coef: float = Field(-1.0, description="Sway sampling of the time steps (negative: more steps "
                                      "early); 0 keeps the schedule as is.")
    use_epss: bool = Field(True, description="F5's Empirically Pruned Step Sampling: its tuned time steps at "
                           "NFE 5, 6, 7, 10, 12 and 16 (uniform steps at any other NFE).")
    ode_method: str = "euler"
    speed: float = Field(1.0, gt=0, description="Base speaking rate; an item's speed multiplies it.")
    seed: int | None = Field(None, description="Fixed seed for every item (None: per-item or random).")
    max_reference_s: float = Field(12.0, gt=0, le=12.0, description="F5 clips longer references but not their text.")
    sentence_pause_ms: int = Field(150, ge=0, description="Silence between separately generated sentence groups.")
    use_ema: bool = True


def packaged_architecture(config_name: str) -> dict[str, Any]:
    """``model.arch`` of one of f5_tts's packaged configs (the real model's shape)."""
    from importlib.resources import files

    import yaml

    path = files("f5_tts").joinpath(f"configs/{config_name}.yaml")
    if not path.is_file():
        raise F5TTSError(f"f5_tts has no packaged config {config_name!r}")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if config["model"]["backbone"] != "DiT" or config["model"]["mel_spec"]["mel_spec_type"] != "vocos":
        raise F5TTSError(f"config {config_name!r} is not a DiT + Vocos model")
    return dict(config["model"]["arch"])


def sentence_texts(tokens: list[ScriptToken]) -> list[str]:
    """The normalised words of ``tokens`` grouped into sentences, clause punctuation kept for prosody."""
    return [" ".join(" ".join(token.spoken) + pause_mark(token.original) for token in sentence)
            for sentence in sentences(tokens)]


def group_sentences(sentences: list[str], max_chars: int) -> list[str]:
    """Greedily join whole sentences up to ``max_chars`` (a longer sentence stays whole)."""
    groups: list[str] = []
    for sentence in sentences:
        if groups and len(groups[-1]) + 1 + len(sentence) <= max_chars:
            groups[-1] = f"{groups[-1]} {sentence}"
        else:
            groups.append(sentence)
    return groups


def reference_duration_s(path: str) -> float:
    import soundfile

    try:
        return float(soundfile.info(path).duration)
    except Exception as exc:  # soundfile raises its own error types per format
        raise F5TTSError(f"cannot read reference audio {path!r}: {exc}") from exc


def piece_seed(seed: int, group: int) -> int:
    """The noise seed of an item's ``group``-th sentence group: depends on the item alone, never on its batch."""
    return int(np.random.SeedSequence([seed, group]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class _Reference:
    """A voice's reference prepared as f5_tts's infer_batch_process prepares it."""

    mel: Any  # (1, frames, mels) tensor on the model's device and dtype: the conditioning audio
    text: str  # f5_tts's processed reference transcript
    frames: int  # reference length in hops (where generated speech starts)
    rms: float
    seconds: float


@dataclass
class _Piece:
    """One sentence group of one request: a row of a batched ``sample()`` call."""

    request: int
    group: int
    voice_key: tuple[str, str]
    chars: list[str]  # reference + generated text, as f5_tts tokenises it
    frames: int  # total mel frames to generate, reference included
    seed: int


class _NoiseFeed:
    """Serves ``CFM.sample()``'s per-row ``torch.randn`` draws from noise the caller drew with per-item generators.

    A TorchFunctionMode (torch's supported hook for factory calls): sample() draws one (frames, mels) tensor per row
    in batch order; a draw of another shape, or too few or too many draws, means f5_tts changed and fails loudly.
    """

    def __new__(cls, noises):
        from torch.overrides import TorchFunctionMode

        class Feed(TorchFunctionMode):
            def __init__(self):
                super().__init__()
                self.noises = list(noises)
                self.used = 0

            def __torch_function__(self, func, types, args=(), kwargs=None):
                import torch

                kwargs = kwargs or {}
                if func is not torch.randn:
                    return func(*args, **kwargs)
                shape = tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)
                if self.used >= len(self.noises) or shape != tuple(self.noises[self.used].shape):
                    raise F5TTSError(f"f5_tts drew noise of shape {shape} (draw {self.used + 1}); expected "
                                     f"{[tuple(n.shape) for n in self.noises]}: its sample() loop changed")
                noise = self.noises[self.used]
                self.used += 1
                return noise.to(device=kwargs.get("device"), dtype=kwargs.get("dtype"))

            def __exit__(self, *exc):
                result = super().__exit__(*exc)
                if exc[0] is None and self.used != len(self.noises):
                    raise F5TTSError(f"f5_tts drew {self.used} noise tensors for {len(self.noises)} rows")
                return result

        return Feed()


class F5TTSSynthesizer(Synthesizer):
    """Clones ``voice`` from its reference clip (<= 12 s) and transcript, speaking the normalised script.

    Batching: ``settings.synthesis_batch_size`` sentence groups of the same voice and similar length go into one
    ``sample()`` call, capped at ``settings.synthesis_batch_frames`` padded frames. Through ``prepare()`` the chunk
    announces its items; the first ``synthesize()`` of a window of items generates the whole window.
    """

    name = "f5tts"
    clones_voice = True
    # A long item's segment fills the ~22 s context beside a reference of up to 12 s (max_reference_s): 10 s of
    # speech, about 150 characters at F5's default rate (its own sentence grouping then fits the real reference).
    segment_seconds = _CONTEXT_S - 12.0
    speaking_chars_per_second = 15.0

    def __init__(self, settings: Settings, f5_settings: F5TTSSettings | None = None):
        super().__init__(settings)
        self.f5 = f5_settings or F5TTSSettings()
        self.model = None
        self.vocoder = None
        self.device: str | None = None
        self.model_files: dict[str, str] = {}
        self.load_s = 0.0
        self._references: dict[tuple[str, str], _Reference] = {}
        self._pending: list[SynthesisRequest] = []
        self._ready: dict[int, Synthesis | Exception] = {}
        self._taken: set[int] = set()

    @classmethod
    def output_params(cls) -> dict[str, Any]:
        return cls.output_params_of(F5TTSSettings())

    # -- files -------------------------------------------------------------------------------------------

    def _paths(self) -> tuple[Path, str, Path]:
        root = Path(self.settings.model_dir)
        checkpoint = Path(self.f5.checkpoint or root / "f5tts" / "F5TTS_v1_Base" / "model_1250000.safetensors")
        vocoder_dir = Path(self.f5.vocoder_dir or root / "vocos-mel-24khz")
        vocab = self.f5.vocab_file or ""  # "" = f5_tts's packaged vocab (the one the v1 Base model was trained with)
        missing = [str(p) for p in (checkpoint, vocoder_dir / "config.yaml", vocoder_dir / "pytorch_model.bin")
                   if not p.is_file()]
        if vocab and not Path(vocab).is_file():
            missing.append(vocab)
        if missing:
            raise F5TTSError(f"F5-TTS model files not found (set NARRATION_F5TTS_*): {', '.join(missing)}")
        return checkpoint, vocab, vocoder_dir

    # -- lifecycle ---------------------------------------------------------------------------------------

    def load(self) -> None:
        if self.model is not None:
            return
        checkpoint, vocab, vocoder_dir = self._paths()
        # Every file is local: make any accidental hub lookup fail fast instead of downloading.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        with _stdout_to_stderr():
            from f5_tts.infer.utils_infer import load_model, load_vocoder
            from f5_tts.model import DiT

            self.device = resolve_device(self.settings.device)
            architecture = dict(self.f5.architecture or packaged_architecture(self.f5.config_name))
            if self.settings.synthesis_batch_size > 1:
                # Rows shorter than their batch must not attend to its padding (no weights involved).
                architecture["attn_mask_enabled"] = True
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="attn_mask_enabled=True")
                self.model = load_model(DiT, architecture, str(checkpoint), mel_spec_type="vocos",
                                        vocab_file=vocab, ode_method=self.f5.ode_method, use_ema=self.f5.use_ema,
                                        device=self.device)
            self.vocoder = load_vocoder("vocos", is_local=True, local_path=str(vocoder_dir), device=self.device)
        self.load_s = time.perf_counter() - started
        self.model_files = {"checkpoint": checkpoint.name, "vocoder": vocoder_dir.name,
                            "config": "custom" if self.f5.architecture else self.f5.config_name}
        log.info("F5-TTS loaded on %s in %.2f s (%s)", self.device, self.load_s, self.model_files)

    def close(self) -> None:
        self.model = None
        self.vocoder = None
        self._references.clear()
        self._pending, self._ready, self._taken = [], {}, set()
        if self.device:
            release_gpu_memory(self.device)

    # -- synthesis ---------------------------------------------------------------------------------------

    def _check_voice(self, voice: Voice) -> tuple[str, str, float]:
        ref_text = (voice.transcript or "").strip()
        if not ref_text:
            # f5_tts would transcribe the reference with whisper-large-v3-turbo from the hub.
            raise F5TTSError(f"voice {voice.voice_id!r} has no reference transcript; F5-TTS needs ref_text")
        if not voice.reference_path:
            raise F5TTSError(f"voice {voice.voice_id!r} has no reference audio")
        seconds = reference_duration_s(voice.reference_path)
        if seconds > self.f5.max_reference_s:
            raise F5TTSError(f"reference audio of voice {voice.voice_id!r} is {seconds:.1f} s; F5-TTS needs "
                             f"<= {self.f5.max_reference_s:g} s (it clips the audio but not the transcript)")
        if seconds <= 0:
            raise F5TTSError(f"reference audio of voice {voice.voice_id!r} is empty")
        return voice.reference_path, ref_text, seconds

    def prepare(self, requests: list[SynthesisRequest]) -> None:
        self._pending, self._ready, self._taken = list(requests), {}, set()

    def _window(self) -> int:
        """Items generated together: enough for full batches of similar length."""
        size = self.settings.synthesis_batch_size
        return 1 if size == 1 else 4 * size

    def _pending_position(self, request: SynthesisRequest) -> int | None:
        for position, pending in enumerate(self._pending):
            if position not in self._taken and pending.voice.voice_id == request.voice.voice_id \
                    and pending.voice.reference_path == request.voice.reference_path \
                    and pending.speed == request.speed and pending.seed == request.seed \
                    and pending.tokens == request.tokens:
                return position
        return None

    def synthesize(
        self, tokens: list[ScriptToken], voice: Voice, *, speed: float = 1.0, seed: int | None = None
    ) -> Synthesis:
        request = SynthesisRequest(tokens, voice, speed, seed)
        position = self._pending_position(request)
        if position is None:  # not announced (a gate retake, a direct call): generated alone
            result = self.synthesize_many([request])[0]
        else:
            if position not in self._ready:
                window = [k for k in range(position, len(self._pending))
                          if k not in self._taken and k not in self._ready][:self._window()]
                for k, done in zip(window, self.synthesize_many([self._pending[k] for k in window])):
                    self._ready[k] = done
            result = self._ready.pop(position)
            self._taken.add(position)
        if isinstance(result, Exception):
            raise result
        return result

    def synthesize_many(self, requests: list[SynthesisRequest]) -> list[Synthesis | Exception]:
        """Each request's Synthesis, or the error that item alone failed with; sentence groups batched."""
        self.load()
        results: list[Synthesis | Exception | None] = [None] * len(requests)
        pieces: list[_Piece] = []
        plans: dict[int, tuple[int, float, _Reference, int]] = {}
        for index, request in enumerate(requests):
            try:
                plans[index] = self._plan(index, request, pieces)
            except Exception as exc:  # a bad voice or script fails its item only
                results[index] = exc
        waves: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
        for batch in self._batches(pieces):
            for piece, wave in zip(batch, self._generate(batch)):
                if isinstance(wave, Exception):
                    results[piece.request] = results[piece.request] or wave
                else:
                    waves[piece.request, piece.group] = wave
        for index, (seed, rate, reference, groups) in plans.items():
            if results[index] is None:
                results[index] = self._assemble(requests[index], [waves[index, g] for g in range(groups)], seed,
                                                rate, reference)
        return results

    # -- batched generation ------------------------------------------------------------------------------

    def _reference(self, voice: Voice) -> _Reference:
        ref_path, ref_text, seconds = self._check_voice(voice)
        key = (voice.voice_id, ref_path)
        if key in self._references:
            return self._references[key]
        import torch
        import torchaudio
        from f5_tts.infer.utils_infer import hop_length, preprocess_ref_audio_text, target_rms, target_sample_rate

        with _stdout_to_stderr():
            processed, ref_text = preprocess_ref_audio_text(ref_path, ref_text, show_info=log.debug)
        audio, rate = torchaudio.load(processed)
        if audio.shape[0] > 1:
            audio = torch.mean(audio, dim=0, keepdim=True)
        rms = float(torch.sqrt(torch.mean(torch.square(audio))))
        if rms < target_rms:
            audio = audio * target_rms / rms
        if rate != target_sample_rate:
            audio = torchaudio.transforms.Resample(rate, target_sample_rate)(audio)
        if len(ref_text[-1].encode("utf-8")) == 1:
            ref_text = ref_text + " "
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            mel = self.model.mel_spec(audio.to(self.device)).permute(0, 2, 1).to(dtype)
        reference = _Reference(mel=mel, text=ref_text, frames=audio.shape[-1] // hop_length, rms=rms,
                               seconds=seconds)
        self._references[key] = reference
        return reference

    def _plan(self, index: int, request: SynthesisRequest, pieces: list[_Piece]) -> tuple[int, float, _Reference,
                                                                                             int]:
        """Add the request's sentence groups to ``pieces``; (seed, rate, reference, number of groups)."""
        from f5_tts.model.utils import convert_char_to_pinyin

        if not request.tokens:
            raise F5TTSError("nothing to speak: the script has no spoken words")
        reference = self._reference(request.voice)
        rate = self.f5.speed * request.speed
        seed = request.seed
        if seed is None:
            seed = self.f5.seed if self.f5.seed is not None else random.randint(0, 2**31 - 1)
        ref_bytes = len(reference.text.encode())
        # F5's own batch budget (infer_process): characters that fit the context beside the reference.
        max_chars = max(1, int(ref_bytes / reference.seconds * (_CONTEXT_S - reference.seconds) * rate))
        groups = group_sentences(sentence_texts(request.tokens), max_chars)
        for group, text in enumerate(groups):
            # infer_batch_process's duration estimate: the reference's frames per byte, very short text slower.
            local_rate = 0.3 if len(text.encode()) < 10 else rate
            chars = convert_char_to_pinyin([reference.text + text])[0]
            frames = reference.frames + int(reference.frames / ref_bytes * len(text.encode()) / local_rate)
            # sample() lengthens a row to its text and conditioning plus one frame.
            frames = max(frames, len(chars) + 1, reference.mel.shape[1] + 1)
            pieces.append(_Piece(index, group, (request.voice.voice_id, request.voice.reference_path or ""),
                                 chars, frames, piece_seed(seed, group)))
        return seed, rate, reference, len(groups)

    def _batches(self, pieces: list[_Piece]) -> list[list[_Piece]]:
        """Rows of one voice sorted by length, cut at the batch size and the padded-frames cap."""
        size, cap = self.settings.synthesis_batch_size, self.settings.synthesis_batch_frames
        batches: list[list[_Piece]] = []
        for piece in sorted(pieces, key=lambda p: (p.voice_key, p.frames)):
            batch = batches[-1] if batches else None
            if (batch and batch[0].voice_key == piece.voice_key and len(batch) < size
                    and (len(batch) + 1) * piece.frames <= cap):
                batch.append(piece)
            else:
                batches.append([piece])
        return batches

    def _generate(self, batch: list[_Piece]) -> list[tuple[np.ndarray, int] | Exception]:
        """(wave, batch size) per row; a failing batch is retried row by row so only failing rows fail."""
        try:
            return [(wave, len(batch)) for wave in self._sample(batch)]
        except Exception as exc:  # CUDA OOM, shape errors: isolate the row at fault
            if len(batch) == 1:
                log.error("F5-TTS generation failed: %s", exc)
                return [exc]
            log.warning("batch of %d failed (%s); generating its rows one at a time", len(batch), exc)
            return [self._generate([piece])[0] for piece in batch]

    def _sample(self, batch: list[_Piece]) -> list[np.ndarray]:
        import torch
        from f5_tts.infer.utils_infer import target_rms

        reference = self._references[batch[0].voice_key]
        noises = [torch.randn(piece.frames, reference.mel.shape[-1],
                              generator=torch.Generator().manual_seed(piece.seed)) for piece in batch]
        durations = torch.tensor([piece.frames for piece in batch], dtype=torch.long, device=self.device)
        with torch.inference_mode(), _NoiseFeed(noises):
            mel, _ = self.model.sample(
                cond=reference.mel.expand(len(batch), -1, -1), text=[piece.chars for piece in batch],
                duration=durations, steps=self.f5.nfe_step, cfg_strength=self.f5.cfg_strength,
                sway_sampling_coef=self.f5.sway_sampling_coef, use_epss=self.f5.use_epss)
        waves = []
        with torch.inference_mode():
            mel = mel.to(torch.float32)
            for row, piece in enumerate(batch):
                generated = mel[row:row + 1, reference.frames:piece.frames, :].permute(0, 2, 1)
                wave = self.vocoder.decode(generated)
                if reference.rms < target_rms:
                    wave = wave * reference.rms / target_rms
                waves.append(wave.squeeze().cpu().numpy().astype(np.float32))
        return waves

    def _assemble(self, request: SynthesisRequest, waves: list[tuple[np.ndarray, int]], seed: int, rate: float,
                  reference: _Reference) -> Synthesis:
        pause = np.zeros(int(SAMPLE_RATE * self.f5.sentence_pause_ms / 1000), dtype=np.float32)
        audio = np.concatenate([part for wave, _ in waves for part in (pause, wave)][1:])
        params = {
            "seed": seed, **self.output_params_of(self.f5), "speed": rate, "timesteps": self._timesteps(),
            "sentence_groups": len(waves), "sentence_pause_ms": self.f5.sentence_pause_ms,
            "batch_size": max(size for _, size in waves), "reference_s": round(reference.seconds, 3),
            "voice": request.voice.voice_id, "device": self.device, **self.model_files,
        }
        return Synthesis(audio=audio, sample_rate=SAMPLE_RATE, params=params)

    @staticmethod
    def output_params_of(f5: F5TTSSettings) -> dict[str, Any]:
        return {"nfe_step": f5.nfe_step, "sway_sampling_coef": f5.sway_sampling_coef, "use_epss": f5.use_epss,
                "cfg_strength": f5.cfg_strength, "ode_method": f5.ode_method}

    def _timesteps(self) -> str:
        """Which schedule sample() ran: F5's pruned EPSS table or uniform steps (then swayed)."""
        import torch
        from f5_tts.model.utils import get_epss_timesteps

        uniform = torch.linspace(0, 1, self.f5.nfe_step + 1)
        epss = self.f5.use_epss and not torch.equal(get_epss_timesteps(self.f5.nfe_step, "cpu", torch.float32),
                                                    uniform)
        return "epss" if epss else "uniform"


@contextlib.contextmanager
def _stdout_to_stderr():
    """f5_tts prints progress to stdout, which is the worker's result channel (its last line is the XCom)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
