"""Batched synthesis and alignment through the real f5-tts and whisperx code, on tiny random float32 models.

An item's audio must not depend on the items it is batched with: each sentence group draws its noise from its own
generator seeded by the item's seed, and batch rows do not attend to each other's padding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from narration.align.base import AlignmentError
from narration.align.whisperx import WhisperXAligner, _Emissions, emission_frames
from narration.audio import resample
from narration.layout import BatchLayout
from narration.normalize import normalize_script
from narration.pipeline import load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.schema import SynthesisRecord
from narration.settings import Settings
from narration.synth.base import SynthesisRequest, Voice
from narration.synth.f5tts import F5TTSSettings, F5TTSSynthesizer
from tests.dag_runs import jsonl

pytestmark = pytest.mark.heavy

# float32 on CPU: batched matmuls sum in another order; the audio peaks are ~0.1.
AUDIO_TOLERANCE = 1e-5
TEXTS = [
    "Hi.",
    "The river runs past the old mill.",
    "Bright stars filled the sky. Where did the summer go?",
    "She sold tickets in two days!",
]


def requests_for(voice: Voice) -> list[SynthesisRequest]:
    return [SynthesisRequest(normalize_script(text), voice, 1.0, 100 + n) for n, text in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def tiny_f5_settings(tiny_f5) -> F5TTSSettings:
    return F5TTSSettings(checkpoint=str(tiny_f5.checkpoint), vocab_file=str(tiny_f5.vocab_file),
                         vocoder_dir=str(tiny_f5.vocoder_dir), architecture=tiny_f5.model_config, nfe_step=4)


@pytest.fixture(scope="module")
def f5_with(tiny_f5_settings):
    def make(batch_size: int, f5: F5TTSSettings | None = None, **settings) -> F5TTSSynthesizer:
        synth = F5TTSSynthesizer(Settings(device="cpu", synthesis_batch_size=batch_size, **settings),
                                 f5 or tiny_f5_settings)
        synth.load()
        return synth

    return make


@pytest.fixture(scope="module")
def batching(f5_with):
    return f5_with(8)


@pytest.fixture(scope="module")
def alone(f5_with, reference_voice):
    """Each request generated on its own, by a synthesizer that never batches."""
    synth = f5_with(1)
    takes = [synth.synthesize_many([request])[0] for request in requests_for(reference_voice)]
    synth.close()
    return takes


def test_batched_items_sound_as_they_do_alone(batching, reference_voice, alone):
    together = batching.synthesize_many(requests_for(reference_voice))

    for single, batched in zip(alone, together):
        assert single.params["batch_size"] == 1 and batched.params["batch_size"] == len(TEXTS)
        assert len(batched.audio) == len(single.audio)
        assert np.abs(batched.audio - single.audio).max() <= AUDIO_TOLERANCE
        assert np.abs(single.audio).max() > 0.01  # real signal, not silence compared with silence


def test_without_the_attention_mask_short_rows_hear_the_padding(f5_with, reference_voice, alone):
    """Why batching turns on DiT's attention mask: without it a row shorter than its batch changes."""
    synth = f5_with(8)
    for block in synth.model.transformer.transformer_blocks:
        block.attn.processor.attn_mask_enabled = False
    together = synth.synthesize_many(requests_for(reference_voice))

    longest = max(range(len(TEXTS)), key=lambda n: len(alone[n].audio))
    differences = [np.abs(b.audio - a.audio).max() for a, b in zip(alone, together)]
    assert differences[longest] <= AUDIO_TOLERANCE
    assert all(d > 10 * AUDIO_TOLERANCE for n, d in enumerate(differences) if n != longest)


def test_batches_follow_the_size_and_the_frames_cap(batching, reference_voice):
    requests = requests_for(reference_voice)[:3]
    loaded = batching.settings
    try:
        batching.settings = loaded.model_copy(update={"synthesis_batch_size": 2})
        by_size = batching.synthesize_many(requests)
        assert sorted(take.params["batch_size"] for take in by_size) == [1, 2, 2]
        batching.settings = loaded.model_copy(update={"synthesis_batch_frames": 256})  # below two rows of any item
        capped = batching.synthesize_many(requests[:2])
        assert [take.params["batch_size"] for take in capped] == [1, 1]
    finally:
        batching.settings = loaded


def test_a_bad_item_fails_alone_and_its_batch_still_speaks(batching, reference_voice, alone):
    silent = Voice("mute", "en", "", reference_path=reference_voice.reference_path)
    requests = requests_for(reference_voice)
    requests.insert(1, SynthesisRequest(normalize_script("No transcript."), silent, 1.0, 5))
    results = batching.synthesize_many(requests)

    assert isinstance(results[1], Exception) and "no reference transcript" in str(results[1])
    for single, batched in zip(alone, results[:1] + results[2:]):
        assert np.abs(batched.audio - single.audio).max() <= AUDIO_TOLERANCE


def test_announced_items_are_generated_a_window_at_a_time(batching, reference_voice, alone):
    """The chunk's path: prepare() with every item, then synthesize() per item in order."""
    synth = batching
    requests = requests_for(reference_voice)
    synth.prepare(requests)
    takes = [synth.synthesize(r.tokens, r.voice, speed=r.speed, seed=r.seed) for r in requests]
    assert [take.params["batch_size"] for take in takes] == [len(TEXTS)] * len(TEXTS)
    for single, batched in zip(alone, takes):
        assert np.abs(batched.audio - single.audio).max() <= AUDIO_TOLERANCE
    # An item that was not announced (a gate retake with another seed) is generated alone.
    retake = synth.synthesize(requests[0].tokens, reference_voice, seed=999)
    assert retake.params["batch_size"] == 1 and retake.params["seed"] == 999


def test_sampling_schedule_is_recorded(f5_with, tiny_f5_settings, reference_voice):
    low = tiny_f5_settings.model_copy(update={"nfe_step": 7})
    take = f5_with(1, low).synthesize(normalize_script("Hello."), reference_voice, seed=1)
    assert (take.params["nfe_step"], take.params["timesteps"], take.params["use_epss"]) == (7, "epss", True)
    assert take.params["sway_sampling_coef"] == -1.0
    uniform = low.model_copy(update={"use_epss": False})
    assert f5_with(1, uniform).synthesize(normalize_script("Hello."), reference_voice, seed=1).params[
        "timesteps"] == "uniform"


def test_chunk_synthesis_batches_its_items_and_keys_them_by_the_sampling_schedule(
        f5_env, storage, narrator, monkeypatch):
    lines = [{"id": f"n{n}", "text": text, "seed": n} for n, text in enumerate(TEXTS)]
    storage.put_bytes("incoming/f5.jsonl", jsonl(*lines))
    plan = plan_batch(storage, Settings(), "f5", ["incoming/f5.jsonl"],
                      BatchOptions(synthesizer="f5tts", aligner="whisperx"), {"narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key)
    settings = Settings(device="cpu", synthesis_batch_size=4)

    result = synthesize_chunk(storage, settings, chunk)
    records = [SynthesisRecord.model_validate(storage.get_json(BatchLayout("f5").synthesis(f"n{n}")))
               for n in range(len(TEXTS))]
    assert [r.status.value for r in result.items] == ["synthesized"] * len(TEXTS)
    assert [r.params["batch_size"] for r in records] == [len(TEXTS)] * len(TEXTS)
    assert {(r.params["nfe_step"], r.params["sway_sampling_coef"]) for r in records} == {(4, -1.0)}

    assert synthesize_chunk(storage, settings, chunk).skipped == len(TEXTS)  # same schedule: reused
    monkeypatch.setenv("NARRATION_F5TTS_SWAY_SAMPLING_COEF", "-0.5")  # another schedule: another key, redone
    again = synthesize_chunk(storage, settings, chunk)
    assert again.skipped == 0
    redone = storage.get_json(BatchLayout("f5").synthesis("n0"))
    assert redone["params"]["sway_sampling_coef"] == -0.5
    assert redone["params"]["cache_key"] != records[0].params["cache_key"]
    assert json.dumps(redone)  # the record stays plain JSON


STORY = "\n\n".join(["The harbour was quiet that morning. Gulls circled above the boats.",
                      "By noon the wind had turned. The fishermen pulled their nets in early.",
                      "Nobody spoke of the storm. They mended the sails and waited."])


def test_a_long_items_segments_are_batched_and_sound_as_they_do_alone(f5_env, storage, narrator):
    """A long item announces the segments it has to make, so F5-TTS generates several per ``sample()`` call;
    each segment keeps its own seed, so the programme is the one made a segment at a time."""
    from narration.audio import from_wav_bytes
    from narration.schema import SegmentRecord

    storage.put_bytes("incoming/story.jsonl", jsonl({"id": "story", "text": STORY, "seed": 7}))
    plan = plan_batch(storage, Settings(), "story", ["incoming/story.jsonl"],
                      BatchOptions(synthesizer="f5tts", aligner="whisperx"), {"narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key).model_copy(update={"params": {"force": True}})
    layout = BatchLayout("story")

    def made_with(batch_size: int) -> list[tuple[SegmentRecord, np.ndarray]]:
        result = synthesize_chunk(storage, Settings(device="cpu", synthesis_batch_size=batch_size), chunk)
        assert [r.status.value for r in result.items] == ["synthesized"]
        record = SynthesisRecord.model_validate(storage.get_json(layout.synthesis("story")))
        assert not any(span.reused for span in record.segments)  # force: every segment made again
        segments = [SegmentRecord.model_validate(storage.get_json(layout.segment_record("story", n)))
                    for n in range(len(record.segments))]
        return [(segment, from_wav_bytes(storage.get_bytes(segment.audio_key))[0]) for segment in segments]

    alone, batched = made_with(1), made_with(4)
    assert len(alone) == 3  # a segment per paragraph
    assert [segment.params["batch_size"] for segment, _ in alone] == [1, 1, 1]
    assert [segment.params["batch_size"] for segment, _ in batched] == [3, 3, 3]
    for (single, single_audio), (together, together_audio) in zip(alone, batched):
        assert (single.seed, single.frames, single.cache_key) == (together.seed, together.frames, together.cache_key)
        # 16-bit WAV: a float difference within AUDIO_TOLERANCE may round to the neighbouring step.
        assert np.abs(together_audio - single_audio).max() <= AUDIO_TOLERANCE + 1 / 32768
        assert np.abs(single_audio).max() > 0.01


# -- alignment ---------------------------------------------------------------------------------------------

SCRIPTS = ["The river runs past the old mill. It was cold.", "Where did the summer go?",
           "She sold three thousand tickets in two days! Then she rested."]


@pytest.fixture
def spoken(speak):
    return [speak(text) for text in SCRIPTS]


def whisperx_with(batch_size: int) -> WhisperXAligner:
    # The random model's scores are meaningless: let every timing through the quality gate.
    aligner = WhisperXAligner(Settings(device="cpu", alignment_batch_size=batch_size, max_untimed_ratio=1.0,
                                       min_mean_score=-1.0))
    aligner.load()
    return aligner


def test_batched_emissions_match_each_item_alone(whisperx_env, spoken):
    aligner = whisperx_with(4)
    model, metadata = aligner._load_language("en")
    audios = [resample(audio, rate, 16000) for audio, rate, _, _ in spoken]
    together = aligner.emissions(audios, model, metadata)
    alone = [aligner.emissions([audio], model, metadata)[0] for audio in audios]

    longest = max(range(len(audios)), key=lambda n: len(audios[n]))
    for n, (batched, single) in enumerate(zip(together, alone)):
        assert batched.shape == single.shape == (emission_frames(len(audios[n])), single.shape[1])
        # The longest row has no padding: the same emissions. wav2vec2-base's group norm runs over time, padding
        # included, so a shorter row's emissions shift (on the tiny model by 15-30 % of their spread); they are
        # exactly those of the item padded with the same silence on its own: rows never leak into each other.
        if n == longest:
            assert (batched - single).abs().max() <= 1e-4
        else:
            padded = np.zeros(len(audios[longest]), dtype=np.float32)
            padded[:len(audios[n])] = audios[n]
            own = aligner.emissions([padded], model, metadata)[0][:len(single)]
            assert (batched - own).abs().max() <= 1e-4


def test_batched_alignment_times_every_item_through_whisperx(whisperx_env, spoken):
    items = [(audio, rate, tokens, "en") for audio, rate, tokens, _ in spoken]
    batched = whisperx_with(4).align_many(items)
    by_window = whisperx_with(1).align_many(items)

    for (audio, rate, tokens, _), words, windowed in zip(items, batched, by_window):
        assert not isinstance(words, Exception), words
        assert [w.index for w in words] == [w.index for w in windowed] == [t.index for t in tokens]
        timed = [w for w in words if w.timed]
        assert timed and all(0 <= w.start_ms <= w.end_ms <= 1000 * len(audio) / rate for w in timed)
        assert all(a.end_ms <= b.start_ms for a, b in zip(timed, timed[1:]))
    alone = whisperx_with(4).align_many([items[0]])[0]
    longest = max(range(len(items)), key=lambda n: len(items[n][0]))
    if longest == 0:
        assert [(w.start_ms, w.end_ms) for w in alone] == [(w.start_ms, w.end_ms) for w in batched[0]]


def test_a_window_that_is_not_the_items_audio_is_refused(whisperx_env, spoken):
    aligner = whisperx_with(4)
    model, metadata = aligner._load_language("en")
    audio = resample(spoken[0][0], spoken[0][1], 16000)
    served = _Emissions(aligner.emissions([audio], model, metadata)[0], torch.from_numpy(audio), metadata["type"],
                        emission_frames)
    served.start = 1600
    with pytest.raises(AlignmentError, match="not the item's audio"):
        served(torch.from_numpy(audio[:16000])[None])
    window = served(torch.from_numpy(audio[1600:17600])[None]).logits
    assert window.shape[1] == emission_frames(16000)


def test_the_align_step_sends_its_items_to_whisperx_in_batched_passes(whisperx_env, storage, narrator, caplog):
    import logging

    from narration.pipeline import align_chunk
    from narration.schema import TimingRecord

    lines = [{"id": f"w{n}", "text": text} for n, text in enumerate(SCRIPTS)]
    storage.put_bytes("incoming/wx.jsonl", jsonl(*lines))
    plan = plan_batch(storage, Settings(), "wx", ["incoming/wx.jsonl"], BatchOptions(aligner="whisperx"),
                      {"narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, Settings(), chunk)
    caplog.set_level(logging.INFO, logger="narration.pipeline")

    result = align_chunk(storage, Settings(device="cpu", alignment_batch_size=len(SCRIPTS), max_untimed_ratio=1.0,
                                           min_mean_score=-1.0), chunk)

    assert [r.status.value for r in result.items] == ["aligned"] * len(SCRIPTS)
    assert f"aligned {len(SCRIPTS)} items in one whisperx pass" in caplog.text
    for item in chunk.items:
        record = TimingRecord.model_validate(storage.get_json(BatchLayout("wx").timing(item.item_id, "whisperx")))
        assert record.method == "whisperx" and [w.index for w in record.words] == list(range(len(item.text.split())))
        timed = [w for w in record.words if w.timed]
        assert timed and all(a.end_ms <= b.start_ms for a, b in zip(timed, timed[1:]))


def test_a_long_items_windows_go_to_whisperx_in_batched_passes(whisperx_env, storage, narrator, monkeypatch):
    from narration.pipeline import align_chunk
    from narration.schema import TimingRecord

    storage.put_bytes("incoming/wxstory.jsonl", jsonl({"id": "story", "text": STORY}))
    plan = plan_batch(storage, Settings(), "wxstory", ["incoming/wxstory.jsonl"], BatchOptions(aligner="whisperx"),
                      {"narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, Settings(), chunk)  # espeak-ng: a segment per sentence
    layout = BatchLayout("wxstory")
    synthesis = SynthesisRecord.model_validate(storage.get_json(layout.synthesis("story")))
    assert len(synthesis.segments) == 6

    passes: list[int] = []  # the real emissions, counted: windows per batched forward pass
    emissions = WhisperXAligner.emissions

    def counted(self, audios, *args):
        passes.append(len(audios))
        return emissions(self, audios, *args)

    monkeypatch.setattr(WhisperXAligner, "emissions", counted)
    settings = Settings(device="cpu", alignment_batch_size=4, max_untimed_ratio=1.0, min_mean_score=-1.0)
    result = align_chunk(storage, settings, chunk)

    assert [r.status.value for r in result.items] == ["aligned"]
    assert passes == [4, 2]
    record = TimingRecord.model_validate(storage.get_json(layout.timing("story", "whisperx")))
    assert [w.index for w in record.words] == [t.index for t in synthesis.tokens]
    timed = [w for w in record.words if w.timed]
    assert timed and all(a.end_ms <= b.start_ms for a, b in zip(timed, timed[1:]))
    # Each window's words lie in its own segment's span of the master: shifted by the segment's start.
    for span in synthesis.segments:
        inside = [w for w in timed if span.first_token <= w.index < span.end_token]
        assert all(span.start_ms <= w.start_ms <= w.end_ms <= span.end_ms for w in inside), span.index
