"""The real speaker encoder (resemblyzer's GE2E weights): an item scores higher against its own voice's reference
than against another speaker's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from narration.normalize import normalize_script
from narration.quality import QualityChecks, QualitySettings
from narration.settings import Settings
from narration.synth.base import Voice
from narration.synth.piper import PiperSynthesizer
from tests.quality_models import loaded_checks

pytestmark = pytest.mark.heavy
pytest.importorskip("resemblyzer", reason="the similarity extra")

TIMIT = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "timit-dev"


@pytest.fixture(scope="module")
def checks() -> QualityChecks:
    return loaded_checks(voice_similarity=True)


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    synth = PiperSynthesizer(Settings())
    synth.load()
    return synth


def _speak(piper, text: str):
    return piper.synthesize(normalize_script(text), Voice("joe", "en", ""))


def test_an_item_checked_against_another_speakers_reference_scores_below_its_own_voice(checks, piper, tmp_path):
    own = _speak(piper, "This is the reference recording of the narrator, read slowly and clearly.")
    own_path = tmp_path / "own.wav"
    soundfile.write(own_path, own.audio, own.sample_rate)
    others = sorted(TIMIT.glob("*_sa1.wav"))[:4]  # four other (human) speakers, if the TIMIT sample is there
    if not others:
        pytest.skip(f"no TIMIT sample at {TIMIT}")
    item = _speak(piper, "The evening news follows the weather, and the weather is cold tonight.")
    same = checks.check(item.audio, item.sample_rate, "en", str(own_path)).voice_similarity
    different = [checks.check(item.audio, item.sample_rate, "en", str(path)).voice_similarity for path in others]
    assert same > 0.8
    assert same > max(different), (same, different)


def test_a_voice_without_reference_audio_is_noted_not_scored(checks, piper):
    item = _speak(piper, "No reference is there.")
    result = checks.check(item.audio, item.sample_rate, "en", None)
    assert result.voice_similarity is None
    assert any("no reference audio" in note for note in result.notes)


def test_embeddings_are_unit_length(checks, piper):
    item = _speak(piper, "A short sentence for the encoder.")
    embedding = checks.speaker.embed(item.audio, item.sample_rate)
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-3


def test_the_gate_resamples_takes_whose_voice_does_not_match_and_records_each_similarity(
    checks, f5_env, cpu_settings, reference_voice, tiny_en_model
):
    from narration.gate import GatedSynthesizer, GateSettings, IntelligibilityGate
    from narration.synth import get_synthesizer_class

    gate = IntelligibilityGate(cpu_settings, GateSettings(asr_model=tiny_en_model, beam_size=1, max_attempts=3,
                                                          wer_threshold=1.0))  # every take passes on WER
    strict = QualityChecks(cpu_settings, QualitySettings(language_id=False, min_voice_similarity=0.999))
    strict.speaker = checks.speaker  # the loaded encoder, with the threshold no random model's take reaches
    gated = GatedSynthesizer(get_synthesizer_class("f5tts")(cpu_settings), gate, strict)
    gated.load()
    try:
        take = gated.synthesize(normalize_script("Bright stars fill the sky."), reference_voice, seed=100)
    finally:
        gated.close()
    tried = take.params["gate_attempts"]
    assert take.params["attempts"] == 3 and [t["seed"] for t in tried] == [100, 101, 102]
    # A random model babbles: a take is either scored below the threshold or has too little voice to score.
    assert all(t["voice_similarity"] is None or -1.0 <= t["voice_similarity"] < 0.999 for t in tried)
    kept = next(t for t in tried if t["seed"] == take.params["seed"])
    measured = take.params["voice_similarity"]
    assert (round(measured, 4) if measured is not None else None) == kept["voice_similarity"]
