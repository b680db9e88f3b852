"""WhisperXAligner through the real whisperx.load_align_model + whisperx.align, on a tiny random wav2vec2 CTC model."""

from __future__ import annotations

from itertools import pairwise

import pytest

from narration.align import get_aligner_class
from narration.align.base import AlignmentError
from narration.align.whisperx import WhisperXAligner, WhisperXSettings, ensure_punkt_tab, split_sentences
from narration.audio import resample
from narration.normalize import normalize_script

pytestmark = pytest.mark.heavy

SCRIPT = "In 1984, it cost $5. Dr. Smith paid 3 times more! Why?"


def aligner_for(settings, **whisperx):
    aligner = get_aligner_class("whisperx")(settings, WhisperXSettings(**whisperx) if whisperx else None)
    aligner.load()
    return aligner


@pytest.fixture
def aligner(whisperx_env, cpu_settings):
    aligner = aligner_for(cpu_settings)
    yield aligner
    aligner.close()


def assert_well_formed(words, tokens, duration_ms):
    assert [w.index for w in words] == [t.index for t in tokens]
    assert [w.text for w in words] == [t.original for t in tokens]
    timed = [w for w in words if w.timed]
    for word in timed:
        assert 0 <= word.start_ms <= word.end_ms <= duration_ms
        assert word.source == "whisperx"
        assert 0.0 <= word.score <= 1.0
    for before, after in pairwise(timed):
        assert before.end_ms <= after.start_ms


def test_one_timing_per_script_token_with_originals_mapped_back(aligner, whisperx_env, speak):
    audio, rate, tokens, _ = speak(SCRIPT)
    words = aligner.align(audio, rate, tokens, "en")

    assert_well_formed(words, tokens, int(len(audio) / rate * 1000) + 1)
    assert all(w.timed for w in words)
    by_text = {w.text: w for w in words}
    assert by_text["1984,"].spoken == "nineteen eighty four"
    assert by_text["$5."].spoken == "five dollars"
    assert by_text["Dr."].spoken == "doctor"
    assert aligner.model == whisperx_env.name  # the model that actually did the work


def test_registry_names_the_backend_and_its_resolution(aligner):
    assert isinstance(aligner, WhisperXAligner)
    assert (aligner.name, aligner.resolution_ms) == ("whisperx", 20)


def test_audio_at_the_f5_master_rate_is_resampled_for_whisperx(aligner, speak):
    audio, rate, tokens, _ = speak("Hello there, my old friend.")
    audio24 = resample(audio, rate, 24000)
    words = aligner.align(audio24, 24000, tokens, "en")
    assert_well_formed(words, tokens, int(len(audio24) / 24000 * 1000) + 1)
    assert all(w.timed for w in words)


def test_mean_score_below_the_floor_routes_to_the_fallback(whisperx_env, cpu_settings, speak):
    audio, rate, tokens, _ = speak(SCRIPT)
    strict = aligner_for(cpu_settings.model_copy(update={"min_mean_score": 0.99}))
    with pytest.raises(AlignmentError, match="mean word score"):
        strict.align(audio, rate, tokens, "en")


def test_too_many_untimed_words_route_to_the_fallback(aligner, speak):
    audio, rate, tokens, _ = speak(SCRIPT)
    clipped = audio[: rate // 10]  # 0.1 s cannot hold the first sentence's characters at 20 ms per frame
    with pytest.raises(AlignmentError, match="untimed"):
        aligner.align(clipped, rate, tokens, "en")


def test_untimed_words_are_kept_and_flagged_when_the_gate_allows_them(whisperx_env, cpu_settings, speak):
    audio, rate, tokens, _ = speak(SCRIPT)
    lenient = aligner_for(cpu_settings.model_copy(update={"max_untimed_ratio": 1.0}))
    words = lenient.align(audio[: rate // 10], rate, tokens, "en")

    assert len(words) == len(tokens)
    untimed = [w for w in words if not w.timed]
    assert untimed and all(w.start_ms is None and w.end_ms is None for w in untimed)
    assert_well_formed(words, tokens, 100)


def test_a_model_that_cannot_load_is_an_alignment_error(cpu_settings, tmp_path, whisperx_env):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(AlignmentError, match="could not load"):
        aligner_for(cpu_settings, align_model=str(empty), nltk_data=str(tmp_path / "nltk"))


def test_reduced_precision_runs_the_model_in_that_dtype(whisperx_env, cpu_settings, speak, tmp_path):
    import torch

    half = aligner_for(cpu_settings, align_model=str(whisperx_env), precision="bfloat16",
                       nltk_data=str(tmp_path / "nltk"))
    model, _ = half._models["en"]
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    audio, rate, tokens, _ = speak(SCRIPT)
    words = half.align(audio, rate, tokens, "en")
    assert all(w.timed for w in words)


def test_close_releases_the_models(aligner):
    aligner.close()
    assert aligner._models == {}


def test_punkt_tab_is_created_offline_when_nltk_has_none(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "nowhere")])
    created = ensure_punkt_tab("en", str(tmp_path / "nltk_data"))

    assert created == str(tmp_path / "nltk_data")
    assert nltk.data.find("tokenizers/punkt_tab/english/")
    assert ensure_punkt_tab("en", str(tmp_path / "other")) is None  # found now: nothing created


def test_sentences_split_at_terminal_punctuation_but_not_abbreviations():
    tokens = normalize_script(SCRIPT)
    sentences = [[t.original for t in s] for s in split_sentences(tokens)]
    assert sentences == [["In", "1984,", "it", "cost", "$5."], ["Dr.", "Smith", "paid", "3", "times", "more!"],
                         ["Why?"]]
