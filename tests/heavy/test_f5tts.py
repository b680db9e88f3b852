"""F5TTSSynthesizer through the real f5-tts loading and sampling code, on a tiny random checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from narration.audio import to_wav_bytes
from narration.normalize import normalize_script
from narration.synth import get_synthesizer_class
from narration.synth.base import Voice
from narration.synth.f5tts import (
    SAMPLE_RATE,
    F5TTSError,
    F5TTSSettings,
    group_sentences,
    packaged_architecture,
    sentence_texts,
)
from tests.heavy.conftest import REFERENCE_TEXT

pytestmark = pytest.mark.heavy


@pytest.fixture
def f5(f5_env, cpu_settings):
    synth = get_synthesizer_class("f5tts")(cpu_settings)
    synth.load()
    yield synth
    synth.close()


def test_speaks_normalised_text_at_24khz_with_a_duration_in_proportion(f5, reference_voice):
    tokens = normalize_script("In 1984, it cost $5.")
    take = f5.synthesize(tokens, reference_voice, seed=7)

    assert take.sample_rate == SAMPLE_RATE == 24000
    assert take.audio.dtype == np.float32 and take.audio.ndim == 1
    assert np.isfinite(take.audio).all() and np.abs(take.audio).max() > 0
    # F5 sizes the output by the reference's speaking rate: seconds per character of its transcript.
    spoken = "in nineteen eighty four, it cost five dollars."
    assert sentence_texts(tokens) == [spoken]  # what F5 is given: the normalised words, punctuation kept
    reference_s = take.params["reference_s"]
    expected_s = reference_s * len(spoken) / len(REFERENCE_TEXT + " ")
    assert 0.75 * expected_s < len(take.audio) / SAMPLE_RATE < 1.25 * expected_s


def test_records_seed_and_sampling_parameters(f5, reference_voice):
    take = f5.synthesize(normalize_script("Hello there."), reference_voice, speed=1.25, seed=11)

    assert take.params["seed"] == 11
    assert take.params["nfe_step"] == 4  # from NARRATION_F5TTS_NFE_STEP
    assert take.params["cfg_strength"] == 2.0 and take.params["sway_sampling_coef"] == -1.0
    assert take.params["speed"] == 1.25
    assert take.params["checkpoint"] == "model_tiny.pt" and take.params["config"] == "custom"
    assert take.params["device"] == "cpu" and take.params["voice"] == "narrator"


def test_same_seed_same_audio_other_seed_other_audio(f5, reference_voice):
    tokens = normalize_script("The river runs to the sea.")
    first = f5.synthesize(tokens, reference_voice, seed=3)
    again = f5.synthesize(tokens, reference_voice, seed=3)
    other = f5.synthesize(tokens, reference_voice, seed=4)

    np.testing.assert_array_equal(first.audio, again.audio)
    assert not np.array_equal(first.audio, other.audio)


def test_without_a_seed_a_random_one_is_recorded(f5, reference_voice):
    take = f5.synthesize(normalize_script("Hello."), reference_voice)
    assert isinstance(take.params["seed"], int)


def test_long_text_is_generated_in_sentence_groups_joined_by_pauses(f5, reference_voice):
    text = " ".join(f"Sentence number {n} is here." for n in range(1, 16))
    take = f5.synthesize(normalize_script(text), reference_voice, seed=1)

    # A 2.8 s reference leaves room for ~370 characters per F5 pass; the script has ~480.
    assert take.params["sentence_groups"] >= 2
    pause = int(SAMPLE_RATE * take.params["sentence_pause_ms"] / 1000)
    silent_runs = np.convolve(take.audio == 0, np.ones(pause), mode="valid") == pause
    assert silent_runs.any()


def test_empty_reference_transcript_is_rejected(f5, reference_voice):
    voice = Voice("mute", "en", "  ", reference_path=reference_voice.reference_path)
    with pytest.raises(F5TTSError, match="ref_text"):
        f5.synthesize(normalize_script("Hello."), voice)


def test_reference_longer_than_12_seconds_is_rejected(f5, tmp_path):
    long_reference = tmp_path / "long.wav"
    long_reference.write_bytes(to_wav_bytes(np.full(13 * 16000, 0.1, dtype=np.float32), 16000))
    voice = Voice("long", "en", "A long reference.", reference_path=str(long_reference))
    with pytest.raises(F5TTSError, match="13.0 s.*<= 12 s"):
        f5.synthesize(normalize_script("Hello."), voice)


def test_missing_model_files_fail_before_any_download(cpu_settings, tmp_path):
    settings = cpu_settings.model_copy(update={"model_dir": str(tmp_path)})
    synth = get_synthesizer_class("f5tts")(settings, F5TTSSettings())
    with pytest.raises(F5TTSError, match="model_1250000.safetensors.*vocos-mel-24khz"):
        synth.load()


def test_close_releases_the_model_and_a_later_item_reloads_it(f5, reference_voice):
    f5.close()
    assert f5.model is None and f5.vocoder is None
    take = f5.synthesize(normalize_script("Back again."), reference_voice, seed=2)
    assert f5.model is not None and len(take.audio) > 0


def test_default_architecture_is_the_packaged_v1_base():
    arch = packaged_architecture("F5TTS_v1_Base")
    assert (arch["dim"], arch["depth"], arch["heads"], arch["conv_layers"]) == (1024, 22, 16, 4)


def test_sentences_keep_clause_punctuation_and_split_only_at_sentence_ends():
    tokens = normalize_script('Dr. Smith paid $5, then left. "Why?" she asked')
    assert sentence_texts(tokens) == ["doctor smith paid five dollars, then left.", "why?", "she asked"]
    assert group_sentences(["a b.", "c d.", "e f g h i."], max_chars=10) == ["a b. c d.", "e f g h i."]
