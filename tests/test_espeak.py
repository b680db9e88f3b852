"""espeak-ng synthesizer through the bundled library: audio, exact word onsets, voices, rates, phonemes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from narration import audio as audio_io
from narration.normalize import normalize_script
from narration.settings import Settings
from narration.synth import get_synthesizer_class
from narration.synth.base import Voice
from narration.synth.espeak import EspeakError, EspeakSynthesizer, espeak_engine, speech_text


def _voice(espeak_voice: str | None = None) -> Voice:
    return Voice(
        voice_id="narrator",
        language="en",
        transcript="",
        metadata={"espeak_voice": espeak_voice} if espeak_voice else {},
    )


@pytest.fixture(scope="module")
def synthesizer() -> EspeakSynthesizer:
    synth = get_synthesizer_class("espeak")(Settings())
    synth.load()
    return synth


def test_speaks_audible_22050_hz_audio_with_one_monotonic_reference_word_per_token(synthesizer):
    tokens = normalize_script('Dr. Okafor paid $5.20 on 12th May 1984, then said: "Zyxquorb!"')
    result = synthesizer.synthesize(tokens, _voice())

    assert result.sample_rate == 22050
    assert result.audio.dtype == np.float32
    assert audio_io.rms_dbfs(result.audio) > -30
    assert np.abs(result.audio).max() <= 1.0
    words = result.reference_words
    assert [w.index for w in words] == [t.index for t in tokens]
    assert [w.text for w in words] == [t.original for t in tokens]
    assert all(w.source == "espeak" for w in words)
    duration_ms = 1000 * len(result.audio) / result.sample_rate
    for word, following in itertools.pairwise(words):
        assert word.start_ms < word.end_ms <= following.start_ms
    assert words[-1].end_ms <= duration_ms
    assert result.params["voice"] == "en-us" and result.params["rate_wpm"] == 175


def test_pause_after_a_comma_is_not_part_of_the_word_but_an_abbreviation_gets_none(synthesizer):
    words = synthesizer.synthesize(normalize_script("Hello, Dr. Smith."), _voice()).reference_words
    hello, doctor, smith = words
    assert doctor.start_ms - hello.end_ms >= 80  # espeak pauses at the comma; the word ends before the pause
    assert smith.start_ms - doctor.end_ms < 40  # "Dr." is no sentence end: no pause

    text, offsets = speech_text(normalize_script("Hello, Dr. Smith."))
    assert text == "hello, doctor smith."
    assert offsets == [0, 7, 14]


def test_speed_scales_the_rate_and_the_voice_comes_from_metadata(synthesizer):
    tokens = normalize_script("The rain in Spain stays mainly in the plain.")
    slow = synthesizer.synthesize(tokens, _voice(), speed=0.75)
    fast = synthesizer.synthesize(tokens, _voice(), speed=1.5)
    assert (slow.params["rate_wpm"], fast.params["rate_wpm"]) == (131, 262)
    assert len(fast.audio) < 0.7 * len(slow.audio)

    british = synthesizer.synthesize(tokens, _voice("en-gb-x-rp"))
    by_language = synthesizer.synthesize(tokens, _voice("en-gb"))
    assert british.params["voice"] == "en-gb-x-rp" and by_language.params["voice"] == "en-gb"
    default = synthesizer.synthesize(tokens, _voice())
    assert len(british.audio) != len(default.audio) or not np.array_equal(british.audio, default.audio)


def test_unknown_voice_and_empty_script_are_clear_errors(synthesizer):
    with pytest.raises(EspeakError, match="no voice or language 'xx-nowhere'"):
        synthesizer.synthesize(normalize_script("hello"), _voice("xx-nowhere"))
    with pytest.raises(EspeakError, match="nothing to speak"):
        synthesizer.synthesize([], _voice())
    # The engine still works after a refused voice.
    assert len(synthesizer.synthesize(normalize_script("still here"), _voice()).audio) > 0


def test_phonemes_of_a_made_up_word():
    assert espeak_engine().phonemes("hello") == ["h", "@", "l", "'oU"]
    assert espeak_engine().phonemes("zyxquorb")[0] == "z"
