"""F5-TTS voice-cloning synthesizer (the production GPU backend): 24 kHz speech in a reference voice.

One loading path serves the real F5TTS_v1_Base checkpoint and tiny test checkpoints: f5_tts's own ``load_model`` +
``load_vocoder`` + ``infer_process``, with every file local (no hub access). f5_tts is imported inside ``load()``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
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
from narration.synth.base import Synthesis, Synthesizer, Voice

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
    nfe_step: int = Field(32, ge=1)
    cfg_strength: float = 2.0
    sway_sampling_coef: float = -1.0
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


class F5TTSSynthesizer(Synthesizer):
    """Clones ``voice`` from its reference clip (<= 12 s) and transcript, speaking the normalised script."""

    name = "f5tts"
    clones_voice = True

    def __init__(self, settings: Settings, f5_settings: F5TTSSettings | None = None):
        super().__init__(settings)
        self.f5 = f5_settings or F5TTSSettings()
        self.model = None
        self.vocoder = None
        self.device: str | None = None
        self.model_files: dict[str, str] = {}
        self.load_s = 0.0

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
            architecture = self.f5.architecture or packaged_architecture(self.f5.config_name)
            self.model = load_model(DiT, architecture, str(checkpoint), mel_spec_type="vocos", vocab_file=vocab,
                                    ode_method=self.f5.ode_method, use_ema=self.f5.use_ema, device=self.device)
            self.vocoder = load_vocoder("vocos", is_local=True, local_path=str(vocoder_dir), device=self.device)
        self.load_s = time.perf_counter() - started
        self.model_files = {"checkpoint": checkpoint.name, "vocoder": vocoder_dir.name,
                            "config": "custom" if self.f5.architecture else self.f5.config_name}
        log.info("F5-TTS loaded on %s in %.2f s (%s)", self.device, self.load_s, self.model_files)

    def close(self) -> None:
        self.model = None
        self.vocoder = None
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

    def synthesize(
        self, tokens: list[ScriptToken], voice: Voice, *, speed: float = 1.0, seed: int | None = None
    ) -> Synthesis:
        if not tokens:
            raise F5TTSError("nothing to speak: the script has no spoken words")
        ref_path, ref_text, ref_seconds = self._check_voice(voice)
        self.load()
        from f5_tts.infer.utils_infer import infer_process, preprocess_ref_audio_text
        from f5_tts.model.utils import seed_everything

        rate = self.f5.speed * speed
        if seed is None:
            seed = self.f5.seed if self.f5.seed is not None else random.randint(0, 2**31 - 1)
        with _stdout_to_stderr():
            ref_audio, ref_text = preprocess_ref_audio_text(ref_path, ref_text, show_info=log.debug)
            # F5's own batch budget (infer_process): characters that fit the context beside the reference.
            max_chars = max(1, int(len(ref_text.encode()) / ref_seconds * (_CONTEXT_S - ref_seconds) * rate))
            groups = group_sentences(sentence_texts(tokens), max_chars)
            seed_everything(seed)
            pieces = []
            for text in groups:
                wave, sample_rate, _ = infer_process(
                    ref_audio, ref_text, text, self.model, self.vocoder, mel_spec_type="vocos",
                    show_info=log.debug, progress=None, nfe_step=self.f5.nfe_step,
                    cfg_strength=self.f5.cfg_strength, sway_sampling_coef=self.f5.sway_sampling_coef,
                    speed=rate, device=self.device,
                )
                if wave is None or sample_rate != SAMPLE_RATE:
                    raise F5TTSError(f"F5-TTS returned no {SAMPLE_RATE} Hz audio for {text!r}")
                pieces.append(np.asarray(wave, dtype=np.float32))
        pause = np.zeros(int(SAMPLE_RATE * self.f5.sentence_pause_ms / 1000), dtype=np.float32)
        audio = np.concatenate([part for piece in pieces for part in (pause, piece)][1:])
        params = {
            "seed": seed, "nfe_step": self.f5.nfe_step, "cfg_strength": self.f5.cfg_strength,
            "sway_sampling_coef": self.f5.sway_sampling_coef, "ode_method": self.f5.ode_method, "speed": rate,
            "sentence_groups": len(groups), "sentence_pause_ms": self.f5.sentence_pause_ms,
            "reference_s": round(ref_seconds, 3), "voice": voice.voice_id, "device": self.device,
            **self.model_files,
        }
        return Synthesis(audio=audio, sample_rate=SAMPLE_RATE, params=params)


@contextlib.contextmanager
def _stdout_to_stderr():
    """f5_tts prints progress to stdout, which is the worker's result channel (its last line is the XCom)."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
