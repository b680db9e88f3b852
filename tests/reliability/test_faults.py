"""Fault injection at the pipeline level: a worker process killed mid-chunk, backend exceptions for chosen items,
and the S3 server going away (a proxy in front of it stops and comes back). After recovery every item has its
outputs exactly once, and only the unfinished items were redone."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from narration.dev.faults import ENV_VAR, FaultPlan, InjectedFault, active_rules
from narration.layout import BatchLayout
from narration.lexicons import upload_lexicon
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.render import render_chunk
from narration.schema import ChunkResult
from narration.settings import Settings
from narration.storage import Storage, StorageError, make_client
from tests.dag_runs import jsonl
from tests.reliability.runs import item_files as files_of

FORMATS = ["srt", "vtt", "ass", "json", "csv"]
SYNTH_FILES = {"audio.wav", "synthesis.json"}
ALL_FILES = SYNTH_FILES | {"timing-pocketsphinx.json", "subtitles.srt", "subtitles.vtt", "subtitles.ass",
                           "words.json", "words.csv", "narration.wav", "delivery.json", "result.json"}


def plan_items(storage, batch_id: str, ids: list[str]):
    lines = [{"id": i, "text": f"Item {i} has a short sentence to say."} for i in ids]
    storage.put_bytes(f"incoming/{batch_id}.jsonl", jsonl(*lines))
    plan = plan_batch(storage, Settings(), batch_id, [f"incoming/{batch_id}.jsonl"],
                      BatchOptions(chunk_size=len(ids)), {"narrator"})
    return plan.chunks[0].key, load_chunk(storage, plan.chunks[0].key)


def run_worker(*args: str, faults: list[dict] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if faults is not None:
        env[ENV_VAR] = json.dumps(faults)
    return subprocess.run([sys.executable, "-m", "narration", *args], check=False, capture_output=True, text=True,
                          env=env, timeout=300)


# -- a worker process killed mid-chunk ----------------------------------------------------------------------


def test_a_worker_killed_mid_chunk_is_retried_and_redoes_only_unfinished_items(storage, narrator):
    chunk_key, _ = plan_items(storage, "killed", ["k1", "k2", "k3", "k4"])
    faults = [{"step": "synthesize", "kill_after": 2}]

    first = run_worker("synthesize", "--chunk", chunk_key, faults=faults)
    assert first.returncode == -signal.SIGKILL and first.stdout == "", "killed before it could report"
    assert files_of(storage, "killed") == {"k1": SYNTH_FILES, "k2": SYNTH_FILES}

    # The retry runs with the same chaos rule: items 1 and 2 are skipped, so the kill point is never reached.
    retry = run_worker("synthesize", "--chunk", chunk_key, faults=faults)
    assert retry.returncode == 0, retry.stderr[-2000:]
    result = ChunkResult.model_validate_json(retry.stdout.strip().splitlines()[-1])
    assert (result.model_loads, result.skipped) == (1, 2)
    assert [i.status.value for i in result.items] == ["synthesized"] * 4
    assert files_of(storage, "killed") == {f"k{n}": SYNTH_FILES for n in range(1, 5)}


def test_a_kill_inside_an_item_leaves_nothing_that_claims_the_item_is_done(storage, narrator):
    chunk_key, _ = plan_items(storage, "midkill", ["m1", "m2", "m3"])
    killed = run_worker("synthesize", "--chunk", chunk_key, faults=[{"step": "synthesize", "kill_mid_item": 2}])
    assert killed.returncode == -signal.SIGKILL
    # m2's audio was written, its record was not: the item is not done, and nothing says it is.
    assert files_of(storage, "midkill") == {"m1": SYNTH_FILES, "m2": {"audio.wav"}}

    retry = run_worker("synthesize", "--chunk", chunk_key)
    result = ChunkResult.model_validate_json(retry.stdout.strip().splitlines()[-1])
    assert result.skipped == 1 and [i.status.value for i in result.items] == ["synthesized"] * 3
    record = storage.get_json(BatchLayout("midkill").synthesis("m2"))
    assert storage.etag(record["audio_key"]) is not None
    assert files_of(storage, "midkill") == {f"m{n}": SYNTH_FILES for n in range(1, 4)}


# -- backend exceptions for chosen items --------------------------------------------------------------------


def run_steps(storage, settings, chunk):
    return (synthesize_chunk(storage, settings, chunk), align_chunk(storage, settings, chunk),
            render_chunk(storage, settings, chunk.model_copy(update={"formats": FORMATS})))


def test_backend_exceptions_fail_only_the_chosen_items_and_a_retry_redoes_only_them(storage, narrator, monkeypatch):
    _, chunk = plan_items(storage, "crashy", ["c1", "c2", "c3", "c4"])
    monkeypatch.setenv(ENV_VAR, json.dumps([{"step": "synthesize", "fail_items": ["c2"]},
                                            {"step": "align", "fail_items": ["c3"]},
                                            {"step": "render", "fail_items": ["c4"]}]))
    synth, align, render = run_steps(storage, Settings(), chunk)
    assert [i.status.value for i in synth.items] == ["synthesized", "synthesis_failed", "synthesized", "synthesized"]
    assert "InjectedFault" in synth.items[1].error
    assert [i.status.value for i in align.items] == ["aligned", "synthesis_failed", "needs_fallback", "aligned"]
    assert [i.status.value for i in render.items] == ["done", "synthesis_failed", "timing_failed", "failed"]
    assert "rendering failed: InjectedFault" in render.items[3].error

    monkeypatch.delenv(ENV_VAR)
    synth, align, render = run_steps(storage, Settings(), chunk)
    assert (synth.skipped, align.skipped, render.skipped) == (3, 2, 1), "only the failed items were redone"
    assert [i.status.value for i in render.items] == ["done"] * 4
    assert files_of(storage, "crashy") == {f"c{n}": ALL_FILES for n in range(1, 5)}


def test_a_backend_fault_finds_an_item_whose_lexicon_phrase_merged_its_tokens(storage, narrator, monkeypatch):
    upload_lexicon(storage, "places", b"grapheme,alias\nNew York,noo yawk\n", "places.csv")
    storage.put_bytes("incoming/lexfault.jsonl", jsonl({"id": "f1", "text": "We flew to New York."},
                                                       {"id": "f2", "text": "We stayed home."}))
    plan = plan_batch(storage, Settings(), "lexfault", ["incoming/lexfault.jsonl"],
                      BatchOptions(chunk_size=2, lexicons=["places"]), {"narrator"})
    monkeypatch.setenv(ENV_VAR, json.dumps([{"step": "synthesize", "fail_items": ["f1"]}]))
    result = synthesize_chunk(storage, Settings(), load_chunk(storage, plan.chunks[0].key))
    assert [i.status.value for i in result.items] == ["synthesis_failed", "synthesized"]
    assert "InjectedFault" in result.items[0].error


def test_the_chaos_hook_is_inert_unless_configured(caplog):
    assert active_rules({}) == [] and active_rules({ENV_VAR: ""}) == []
    with caplog.at_level(logging.WARNING, logger="narration.dev.faults"):
        assert active_rules({ENV_VAR: "{not json"}) == []
        assert active_rules({ENV_VAR: '{"kill_after": 2}'}) == []  # no step
    assert "ignoring NARRATION_FAULTS" in caplog.text
    plan = FaultPlan("synthesize", "c0000", {ENV_VAR: '{"step": "align", "fail_items": ["x"], "kill_after": 1}'})
    plan.before_backend("x")
    plan.after_item(1)  # the rule is for another step: nothing happens
    with pytest.raises(InjectedFault):
        FaultPlan("align", "c0000", {ENV_VAR: '{"step": "align", "fail_items": ["x"]}'}).before_backend("x")


# -- the S3 server unavailable for a while ------------------------------------------------------------------


def proxied_storage(proxy, bucket: str, **kwargs) -> Storage:
    settings = Settings(s3_endpoint_url=proxy.endpoint_url, bucket=bucket, s3_max_attempts=kwargs.pop("attempts", 3))
    return Storage(bucket, make_client(settings), settings, **kwargs)


def test_an_s3_outage_shorter_than_the_retry_window_is_ridden_out(storage, narrator, s3_proxy, caplog):
    _, chunk = plan_items(storage, "blip", ["o1", "o2", "o3"])
    proxied = proxied_storage(s3_proxy, storage.bucket)  # the default window: 30 s
    s3_proxy.fail_when(rb"PUT /[^ ]*/items/o2/audio\.wav", outage_s=2.0)

    with caplog.at_level(logging.WARNING, logger="narration.storage"):
        result = synthesize_chunk(proxied, Settings(), chunk)
    assert [i.status.value for i in result.items] == ["synthesized"] * 3
    assert len(s3_proxy.outages) == 1 and s3_proxy.outages[0][1] - s3_proxy.outages[0][0] >= 2.0
    assert "unavailable" in caplog.text and "retrying" in caplog.text
    assert files_of(storage, "blip") == {f"o{n}": SYNTH_FILES for n in range(1, 4)}


def test_a_long_s3_outage_fails_the_chunk_clearly_with_nothing_half_written(storage, narrator, s3_proxy):
    _, chunk = plan_items(storage, "outage", ["d1", "d2", "d3"])
    proxied = proxied_storage(s3_proxy, storage.bucket, outage_retry_s=2.0, attempts=2)
    s3_proxy.fail_when(rb"PUT /[^ ]*/items/d2/audio\.wav", outage_s=None)  # down until restored

    started = time.monotonic()
    # d2's audio is written in the background while the worker reads the voice for d3: whichever of the two
    # requests gives up first is the error, and both name the endpoint, the object and the attempts.
    unreachable = (r"S3 at http://127\.0\.0\.1:\d+ unreachable: could not (write|read) "
                   r"s3://\S+/(items/d2/audio\.wav|voices/narrator/\S+) in \d+ attempt\(s\) over")
    with pytest.raises(StorageError, match=unreachable):
        synthesize_chunk(proxied, Settings(), chunk)
    assert time.monotonic() - started < 30, "retries are bounded"

    s3_proxy.restore()
    # d1 is complete; d2 and d3 have nothing that could be mistaken for output.
    assert files_of(storage, "outage") == {"d1": SYNTH_FILES}
    result = synthesize_chunk(proxied, Settings(), chunk)
    assert (result.model_loads, result.skipped) == (1, 1)
    assert files_of(storage, "outage") == {f"d{n}": SYNTH_FILES for n in range(1, 4)}


def test_a_worker_killed_by_a_signal_is_reported_as_killed_by_that_signal(storage, narrator, monkeypatch):
    from operators.worker import WorkerError, WorkerOperator

    chunk_key, chunk = plan_items(storage, "signalled", ["s1", "s2"])
    monkeypatch.setenv(ENV_VAR, json.dumps([{"step": "synthesize", "kill_after": 1}]))
    monkeypatch.setenv("NARRATION_RUNNER", "local")
    operator = WorkerOperator(task_id="synthesize", step="synthesize",
                              chunk={"key": chunk_key, "label": "c0000 s1..s2 (2)"})
    with pytest.raises(WorkerError, match=r"narration synthesize for chunk c0000 s1\.\.s2 \(2\) was killed by "
                                          r"SIGKILL \(out of memory, or killed from outside\) before it printed"):
        operator.execute(context={})
    assert files_of(storage, "signalled") == {"s1": SYNTH_FILES}


def test_a_connection_dropped_mid_upload_leaves_no_partial_object_and_the_item_is_redone(storage, narrator,
                                                                                        s3_proxy):
    from narration.pipeline import audio_problem, read_record
    from narration.schema import SynthesisRecord

    _, chunk = plan_items(storage, "cut", ["u1", "u2", "u3"])
    proxied = proxied_storage(s3_proxy, storage.bucket, outage_retry_s=2.0, attempts=2)
    layout = BatchLayout("cut")
    # u2's audio upload: headers and 20,000 bytes of the body reach S3, then the link drops and stays down.
    s3_proxy.cut_when(rb"PUT /[^ ]*/items/u2/audio\.wav", body_bytes=20_000, outage_s=None)
    with pytest.raises(StorageError, match="unreachable"):
        synthesize_chunk(proxied, Settings(), chunk)
    assert b"items/u2/audio.wav" in s3_proxy.cut_request and s3_proxy.cut_after_body_bytes == 20_000

    # Behind the proxy, S3 holds nothing of the cut upload: no partial audio, no record.
    assert files_of(storage, "cut") == {"u1": SYNTH_FILES}
    s3_proxy.restore()
    retry = synthesize_chunk(proxied, Settings(), chunk)
    assert (retry.model_loads, retry.skipped) == (1, 1)
    assert [i.status.value for i in retry.items] == ["synthesized"] * 3
    record, _ = read_record(storage, layout.synthesis("u2"), SynthesisRecord)
    assert audio_problem(storage, record) is None, "u2's audio is whole and is what its record describes"
    assert len(storage.get_bytes(layout.audio("u2"))) > 20_000
    assert files_of(storage, "cut") == {f"u{n}": SYNTH_FILES for n in range(1, 4)}
