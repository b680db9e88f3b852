"""The worker contract: `narration <step> --chunk KEY` reads S3, writes S3 and prints exactly one JSON line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from narration.layout import BatchLayout
from narration.plan import BatchOptions, plan_batch
from narration.schema import ChunkResult
from narration.settings import Settings
from tests.dag_runs import jsonl


def run_worker(*args: str) -> tuple[int, list[str], str]:
    proc = subprocess.run([sys.executable, "-m", "narration", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


@pytest.fixture()
def planned(storage, narrator):
    storage.put_bytes("incoming/cli.jsonl", jsonl(
        {"id": "w1", "text": "The first of three items, with 2 numbers."},
        {"id": "w2", "text": "A second, shorter item."},
        {"id": "w3", "text": "And the third item ends the chunk."},
    ))
    return plan_batch(storage, Settings(), "cli-batch", ["incoming/cli.jsonl"],
                      BatchOptions(chunk_size=3, formats=["srt", "vtt"]), {"narrator"})


def test_steps_print_one_json_result_line_and_write_s3(storage, planned):
    layout = BatchLayout(planned.batch_id)
    chunk_key = planned.chunks[0].key

    code, stdout, stderr = run_worker("synthesize", "--chunk", chunk_key)
    assert code == 0, stderr
    assert len(stdout) == 1, "stdout carries the result line and nothing else"
    result = ChunkResult.model_validate_json(stdout[0])
    assert (result.step, result.backend, result.model_loads) == ("synthesize", "espeak", 1)
    assert [(i.item_id, i.status) for i in result.items] == [("w1", "synthesized"), ("w2", "synthesized"),
                                                              ("w3", "synthesized")]
    assert "synthesized w1" in stderr  # progress goes to stderr, i.e. the task log
    for item_id in ("w1", "w2", "w3"):
        assert storage.get_bytes(layout.audio(item_id))[:4] == b"RIFF"
        assert storage.get_json(layout.synthesis(item_id))["backend"] == "espeak"

    code, stdout, stderr = run_worker("align", "--chunk", chunk_key)
    assert code == 0, stderr
    result = ChunkResult.model_validate_json(stdout[-1])
    assert (result.step, result.backend, result.model_loads) == ("align", "pocketsphinx", 1)
    assert {i.status for i in result.items} == {"aligned"}
    timing = storage.get_json(layout.timing("w1", "pocketsphinx"))
    assert [w["text"] for w in timing["words"]][-3:] == ["with", "2", "numbers."]

    code, stdout, stderr = run_worker("render", "--chunk", chunk_key)  # the chunk carries formats srt, vtt
    assert code == 0, stderr
    assert {i.status for i in ChunkResult.model_validate_json(stdout[-1]).items} == {"done"}
    assert storage.get_text(layout.subtitle("w2", "srt")).startswith("1\n00:00:00")
    assert not storage.exists(layout.subtitle("w2", "ass"))

    code, stdout, stderr = run_worker("report", "--batch", planned.batch_id)
    assert code == 0, stderr
    assert json.loads(stdout[-1])["by_status"] == {"done": 3}


def test_render_takes_every_choice_from_the_chunk_spec(storage, narrator):
    storage.put_bytes("incoming/choices.jsonl", jsonl({"id": "k1", "text": "Every choice of the run is in the chunk."}))
    options = BatchOptions(formats=["vtt", "ttml"], vtt_word_timestamps=True, subtitle_fps=29.97,
                           subtitle_profile="netflix-adult-20cps")
    planned = plan_batch(storage, Settings(), "choices", ["incoming/choices.jsonl"], options, {"narrator"})
    chunk_key = planned.chunks[0].key
    spec = storage.get_json(chunk_key)
    assert (spec["formats"], spec["vtt_word_timestamps"], spec["subtitle_fps"], spec["subtitle_profile"]) == (
        ["vtt", "ttml"], True, 29.97, "netflix-adult-20cps")
    for step in ("synthesize", "align", "render"):
        code, _, stderr = run_worker(step, "--chunk", chunk_key)
        assert code == 0, stderr
    layout = BatchLayout("choices")
    assert sorted(k.rsplit("/", 1)[1] for k in storage.list_keys(layout.item_prefix("k1"))
                  if "subtitles" in k or "words" in k) == ["subtitles.ttml", "subtitles.vtt"]
    assert re.search(r"<\d\d:\d\d:\d\d\.\d{3}>", storage.get_text(layout.subtitle("k1", "vtt")))
    ttml = storage.get_text(layout.subtitle("k1", "ttml"))
    assert 'ttp:frameRate="30"' in ttml and 'ttp:frameRateMultiplier="1000 1001"' in ttml
    assert storage.get_json(layout.result("k1"))["ttml_key"] == layout.subtitle("k1", "ttml")


def test_a_missing_chunk_exits_non_zero_with_an_error_result_line(storage):
    code, stdout, stderr = run_worker("synthesize", "--chunk", "batches/none/chunks/c9999.json")
    assert code == 1
    assert len(stdout) == 1 and "error" in json.loads(stdout[0])
    assert "batches/none/chunks/c9999.json" in json.loads(stdout[0])["error"]
    assert json.loads(stdout[0])["retryable"] is True


def test_unknown_backend_is_named_with_the_valid_ones(storage, planned):
    code, stdout, _ = run_worker("align", "--chunk", planned.chunks[0].key, "--backend", "guesswork")
    assert code == 1
    assert "unknown aligner 'guesswork'; valid names: google, pocketsphinx, whisperx" in json.loads(stdout[-1])["error"]
    assert json.loads(stdout[-1])["retryable"] is False, "no retry can make the name known"
