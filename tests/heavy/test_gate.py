"""IntelligibilityGate with faster-whisper tiny.en (from PyPI) on espeak speech, and seed re-sampling of F5-TTS."""

from __future__ import annotations

import pytest

from narration.gate import GateSettings, IntelligibilityGate, synthesize_with_gate, word_error_rate
from narration.normalize import normalize_script
from narration.synth import get_synthesizer_class
from narration.synth.base import Voice

pytestmark = pytest.mark.heavy

PANGRAM = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def gate(cpu_settings, tiny_en_model):
    gate = IntelligibilityGate(cpu_settings, GateSettings(asr_model=tiny_en_model, beam_size=1))
    gate.load()
    yield gate
    gate.close()


def test_tiny_en_understands_espeak_speech(gate, speak):
    audio, rate, tokens, _ = speak(PANGRAM)
    wer, transcript = gate.score(audio, rate, tokens)
    # measured 0.22 here ("The quick brown fox jump over the lazy nog."); tiny.en varies across CPUs
    assert wer <= 0.5, transcript


def test_speech_scored_against_another_script_fails(gate, speak):
    audio, rate, _, _ = speak(PANGRAM)
    wer, _ = gate.score(audio, rate, normalize_script("Seven sailors sang songs about distant islands."))
    assert wer >= 0.8


def test_wer_compares_normalised_words():
    assert word_error_rate("It cost $5 in 1984.", "it cost five dollars in nineteen eighty four") == 0.0
    assert word_error_rate("a b c", "a x c") == pytest.approx(1 / 3)
    assert word_error_rate("a b", "") == 1.0


def test_a_good_first_take_is_kept_without_retrying(gate, espeak):
    tokens = normalize_script(PANGRAM)
    take, attempts, wer = synthesize_with_gate(espeak, gate, tokens, Voice("espeak", "en", ""),
                                               max_attempts=3, wer_threshold=0.5, seed=10)
    assert attempts == 1 and wer <= 0.5
    assert take.params["asr_wer"] == round(wer, 4)
    assert take.params["gate_attempts"] == [{"seed": 10, "wer": round(wer, 4)}]


def test_unintelligible_takes_are_resampled_with_new_seeds_and_the_best_kept(
    gate, f5_env, cpu_settings, reference_voice
):
    f5 = get_synthesizer_class("f5tts")(cpu_settings)  # a random model babbles: no take passes
    tokens = normalize_script("Bright stars fill the sky.")
    take, attempts, wer = synthesize_with_gate(f5, gate, tokens, reference_voice,
                                               max_attempts=3, wer_threshold=0.0, seed=100)
    f5.close()

    tried = take.params["gate_attempts"]
    assert attempts == 3 and [t["seed"] for t in tried] == [100, 101, 102]
    assert wer == min(t["wer"] for t in tried) > 0.0
    best = min(tried, key=lambda t: t["wer"])
    assert take.params["seed"] == best["seed"]


def test_a_missing_asr_model_is_reported_with_its_setting(cpu_settings, tmp_path):
    gate = IntelligibilityGate(cpu_settings, GateSettings(asr_model=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="NARRATION_GATE_ASR_MODEL"):
        gate.load()


def test_the_synthesis_step_runs_the_gate_and_records_attempts_and_wer(gate, espeak):
    from narration.gate import GatedSynthesizer
    from narration.normalize import normalize_script
    from narration.synth.base import Voice

    gated = GatedSynthesizer(espeak, gate)
    take = gated.synthesize(normalize_script("The ferry leaves at seven every morning."), Voice("n", "en", "x"))
    assert take.params["attempts"] >= 1 and 0.0 <= take.params["asr_wer"] <= 1.0
    assert len(take.params["gate_attempts"]) == take.params["attempts"]
    assert gated.name == "espeak"
