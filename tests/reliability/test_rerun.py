"""Idempotent re-runs at the pipeline level: a second run of synthesize, align and render loads no model, skips
every item and rewrites nothing; changed inputs redo exactly the items they touch; ``force`` redoes everything."""

from __future__ import annotations

import numpy as np
import pytest

from narration.audio import to_wav_bytes
from narration.layout import BatchLayout
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.render import render_chunk
from narration.settings import Settings
from narration.voices import upload_voice
from tests.dag_runs import jsonl

LINES = [
    {"id": "r1", "text": "The library opens at nine on Monday."},
    {"id": "r2", "text": "Rain is expected tonight, with 12 degrees."},
    {"id": "r3", "text": "Thank you for listening."},
]
FORMATS = ["srt", "vtt", "ass", "json", "csv"]


def snapshot(storage, prefix: str) -> dict[str, tuple[str, object, bytes]]:
    """Every object under ``prefix``: its ETag, LastModified and bytes (LastModified changes on any rewrite)."""
    out = {}
    for key in storage.list_keys(prefix):
        head = storage.head(key)
        out[key] = (head["ETag"], head["LastModified"], storage.get_bytes(key))
    return out


def run_steps(storage, settings, chunk):
    synth = synthesize_chunk(storage, settings, chunk)
    align = align_chunk(storage, settings, chunk)
    render = render_chunk(storage, settings, chunk.model_copy(update={"formats": FORMATS}))
    return synth, align, render


@pytest.fixture()
def chunk(storage, narrator):
    storage.put_bytes("incoming/rerun.jsonl", jsonl(*LINES))
    plan = plan_batch(storage, Settings(), "rerun", ["incoming/rerun.jsonl"], BatchOptions(chunk_size=3),
                      {"narrator"})
    return load_chunk(storage, plan.chunks[0].key)


def test_a_second_run_does_no_work_and_changes_nothing(storage, chunk):
    settings = Settings()
    items = BatchLayout("rerun").root + "items/"
    first = run_steps(storage, settings, chunk)
    assert [r.model_loads for r in first[:2]] == [1, 1] and [r.skipped for r in first] == [0, 0, 0]
    assert {i.status.value for i in first[2].items} == {"done"}
    before = snapshot(storage, items)
    assert len(before) == 3 * 11  # audio, synthesis, timing, five subtitle/word files, master, delivery, result

    second = run_steps(storage, settings, chunk)
    assert [(r.step, r.model_loads, r.skipped) for r in second] == [("synthesize", 0, 3), ("align", 0, 3),
                                                                     ("render", 0, 3)]
    assert [[i.status for i in r.items] for r in second] == [[i.status for i in r.items] for r in first]
    assert snapshot(storage, items) == before, "a re-run rewrote or changed an output"


def test_changed_inputs_redo_exactly_the_items_they_touch(storage, chunk, narrator_wav):
    settings = Settings()
    layout = BatchLayout("rerun")
    run_steps(storage, settings, chunk)

    # A lost audio file: only that item is synthesized again. espeak-ng takes differ by a few samples, so the new
    # take has a new ETag and its timing and files are redone too; the other two items are untouched.
    old_etag = storage.etag(layout.audio("r2"))
    storage.delete(layout.audio("r2"))
    synth, align, render = run_steps(storage, settings, chunk)
    retimed = 0 if storage.etag(layout.audio("r2")) == old_etag else 1
    assert (synth.model_loads, synth.skipped, align.skipped, render.skipped) == (1, 2, 3 - retimed, 2)

    # A new reference recording for the voice (a new ETag): every item that uses it is redone.
    louder = to_wav_bytes(np.clip(audio_samples(narrator_wav) * 1.5, -1, 1), 22050)
    upload_voice(storage, "narrator", louder, "This is the narrator's reference voice for the tests.", replace=True)
    synth, align, render = run_steps(storage, settings, chunk)
    assert (synth.model_loads, synth.skipped) == (1, 0)
    assert render.skipped == 0


def test_force_redoes_every_item_of_every_step(storage, chunk):
    settings = Settings()
    run_steps(storage, settings, chunk)
    forced = chunk.model_copy(update={"params": {**chunk.params, "force": True}})
    synth, align, render = run_steps(storage, settings, forced)
    assert [(r.model_loads, r.skipped) for r in (synth, align, render)] == [(1, 0), (1, 0), (0, 0)]
    assert {i.status.value for i in render.items} == {"done"}


def test_a_timing_verdict_is_reused_but_a_changed_quality_gate_redoes_it(storage, chunk):
    strict = Settings(min_mean_score=1e9)  # no alignment can pass: every item is judged needs_fallback
    synthesize_chunk(storage, strict, chunk)
    first = align_chunk(storage, strict, chunk)
    assert {i.status.value for i in first.items} == {"needs_fallback"}
    again = align_chunk(storage, strict, chunk)
    assert (again.model_loads, again.skipped) == (0, 3), "the same inputs give the same verdict: not redone"
    relaxed = align_chunk(storage, Settings(), chunk)
    assert (relaxed.model_loads, relaxed.skipped) == (1, 0)
    assert {i.status.value for i in relaxed.items} == {"aligned"}


def test_a_changed_intelligibility_gate_setting_redoes_synthesis(storage, chunk, monkeypatch):
    settings = Settings()
    synthesize_chunk(storage, settings, chunk)
    assert synthesize_chunk(storage, settings, chunk).skipped == 3
    monkeypatch.setenv("NARRATION_GATE_WER_THRESHOLD", "0.1")  # the gate would keep a different take
    redone = synthesize_chunk(storage, settings, chunk)
    assert (redone.model_loads, redone.skipped) == (1, 0)


def audio_samples(wav: bytes):
    from narration.audio import from_wav_bytes

    samples, rate = from_wav_bytes(wav)
    assert rate == 22050
    return samples


def test_a_rerun_repairs_outputs_that_exist_but_are_not_what_their_records_state(storage, chunk, caplog):
    import logging

    from narration.audio import from_wav_bytes, resample

    settings = Settings()
    layout = BatchLayout("rerun")
    run_steps(storage, settings, chunk)
    uri = f"s3://{storage.bucket}/{layout.root}items"
    frames = (len(storage.get_bytes(layout.audio("r2"))) - 44) // 2
    samples, rate = from_wav_bytes(storage.get_bytes(layout.audio("r3")))
    storage.put_bytes(layout.audio("r1"), b"\x00garbage" * 500)
    storage.put_bytes(layout.audio("r2"), storage.get_bytes(layout.audio("r2"))[:60])
    storage.put_bytes(layout.audio("r3"), to_wav_bytes(resample(samples, rate, 16000), 16000))  # valid, other rate
    with caplog.at_level(logging.INFO, logger="narration.pipeline"):
        synth = synthesize_chunk(storage, settings, chunk)
    assert (synth.model_loads, synth.skipped) == (1, 0), "every audio file failed its check and was redone"
    assert f"synthesizing r1 again: {uri}/r1/audio.wav: not a PCM WAV file" in caplog.text
    assert f"synthesizing r2 again: {uri}/r2/audio.wav: truncated WAV: its header states {frames:,} frames, 8 " \
           "present" in caplog.text
    assert f"synthesizing r3 again: {uri}/r3/audio.wav: sample rate 16000 Hz, its record states 22050 Hz" \
           in caplog.text
    run_steps(storage, settings, chunk)

    # Records that do not parse vouch for nothing: each step redoes exactly the item whose record broke.
    storage.put_text(layout.synthesis("r1"), '{"item_id": "r1", "status": ')
    assert synthesize_chunk(storage, settings, chunk).skipped == 2
    run_steps(storage, settings, chunk)
    storage.put_text(layout.timing("r2", "pocketsphinx"), "[]")
    assert align_chunk(storage, settings, chunk).skipped == 2
    run_steps(storage, settings, chunk)
    storage.put_text(layout.subtitle("r3", "json"), "{truncated")
    render = render_chunk(storage, settings, chunk.model_copy(update={"formats": FORMATS}))
    assert render.skipped == 2 and {i.status.value for i in render.items} == {"done"}
    assert storage.get_json(layout.subtitle("r3", "json"))["words"]
