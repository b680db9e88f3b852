"""The faults of issue 11 on the real DAG (dag.test() on SQLite, local runner, espeak + pocketsphinx, S3 on
loopback), each with its exact final state: per-item statuses, the three report files agreeing, where each
manifest is, how many tries each task took and how long the run took.

- corrupt and truncated outputs between runs: the re-run repairs them, the report is rewritten whole;
- an item that cannot be repaired: its row says so, no link, the manifest waits in incomplete/ until a run
  completes it; ``force_rerender`` on that same (cleared) run redoes everything;
- every item failed, fallback unavailable, a synthesis worker killed on every try: incomplete/, never processed/;
- configuration mistakes (unknown synthesizer, Google not configured, missing bucket, wrong endpoint) and a manifest
  another batch holds: planning fails on its first try, names the setting, claims nothing, in seconds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from narration.layout import SUBTITLE_FORMATS, BatchLayout
from narration.lifecycle import _lock_key, batch_id_for
from narration.storage import Storage
from tests.dag_runs import jsonl
from tests.reliability.runs import DagRunRecord, new_bucket, run_dags, wall_s

pytestmark = pytest.mark.dag_run

FORMATS = list(SUBTITLE_FORMATS)
REPAIR_LINES = [{"id": f"r{n}", "text": text} for n, text in enumerate(
    ["The first story of the night.", "Roads are closed after the storm.", "The match ended in a draw.",
     "Tomorrow will be dry and bright."], start=1)]
LIFECYCLE_MANIFESTS = {
    "all-fail.jsonl": [{"id": "b1", "text": "Nothing of this line is narrated."},
                       {"id": "b2", "text": "Nor of this one."}],
    "no-fallback.jsonl": [{"id": "c1", "text": "This line is timed by the primary."},
                          {"id": "c2", "text": "This one is sent to a fallback that is not there."}],
    "fine.jsonl": [{"id": "d1", "text": "Everything about this line works."}],
    "junk.jsonl": ["{this is not a manifest line"],
}
HOLDER = "20260101T000000-manual-0000beef"


@dataclass
class Suite:
    runs: dict[str, DagRunRecord]
    buckets: dict[str, Storage]

    def batch_id(self, name: str) -> str:
        when = datetime.fromisoformat(next(r["when"] for r in PLAN if r["name"] == name))
        return BatchLayout(batch_id_for(self.runs[name].run_id, when)).batch_id


PLAN: list[dict] = []


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def suite(s3_server, airflow_db, narrator_wav, tmp_path_factory) -> Suite:
    buckets = {name: new_bucket(name, narrator_wav) for name in
               ("repair", "lifecycle", "killed", "synth", "google", "nobucket", "endpoint", "held")}
    buckets["repair"].put_bytes("incoming/desk.jsonl", jsonl(*REPAIR_LINES))
    for name, lines in LIFECYCLE_MANIFESTS.items():
        buckets["lifecycle"].put_bytes(f"incoming/{name}", jsonl(*lines))
    buckets["killed"].put_bytes("incoming/killed.jsonl", jsonl({"id": "k1", "text": "The worker dies here."},
                                                               {"id": "k2", "text": "And never gets here."}))
    for name in ("synth", "google", "nobucket", "endpoint", "held"):
        buckets[name].put_bytes(f"incoming/{name}.jsonl", jsonl({"id": "x1", "text": "A line to narrate."}))

    def env(name: str, **extra) -> dict:
        return {"NARRATION_BUCKET": buckets[name].bucket, **extra}

    when = {k: datetime(2026, 4, d, 2, 0, tzinfo=timezone.utc).isoformat()
            for d, k in enumerate(["repair", "lifecycle", "killed", "synth", "google", "nobucket", "endpoint",
                                   "held"], start=1)}
    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    wrong = f"http://127.0.0.1:{closed_port()}"
    conn["extra"]["endpoint_url"] = wrong
    # dag.test()'s run id for a logical date is manual__<iso>: the batch id is known before the run.
    moment = datetime.fromisoformat(when["repair"])
    items = BatchLayout(batch_id_for(f"manual__{moment.isoformat()}", moment)).root + "items/"
    chunk4 = {"chunk_size": 4}
    PLAN[:] = [
        {"name": "repair-clean", "when": when["repair"], "conf": chunk4, "env": env("repair")},
        {"name": "repair-corrupted", "when": when["repair"], "conf": chunk4, "snapshot": buckets["repair"].bucket,
         "env": env("repair", NARRATION_FAULTS=json.dumps({"step": "synthesize", "fail_items": ["r1"]})),
         "before": [{"bucket": buckets["repair"].bucket, "key": items + "r1/audio.wav", "op": "garbage",
                     "bytes": 4000},
                    {"bucket": buckets["repair"].bucket, "key": items + "r2/audio.wav", "op": "truncate",
                     "bytes": 60},
                    {"bucket": buckets["repair"].bucket, "key": items + "r3/words.json", "op": "put",
                     "text": "{not json"}]},
        {"name": "repair-repaired", "when": when["repair"], "conf": chunk4, "env": env("repair")},
        {"name": "repair-unchanged", "when": when["repair"], "conf": chunk4, "env": env("repair")},
        {"name": "repair-forced", "when": when["repair"], "conf": {**chunk4, "force_rerender": True},
         "env": env("repair")},
        {"name": "lifecycle-first", "when": when["lifecycle"], "conf": {"chunk_size": 8, "force_fallback": ["c2"]},
         "env": env("lifecycle", NARRATION_FAULTS=json.dumps({"step": "synthesize", "fail_items": ["b1", "b2"]}))},
        {"name": "lifecycle-completed", "when": when["lifecycle"], "conf": {"chunk_size": 8},
         "env": env("lifecycle")},
        {"name": "killed", "when": when["killed"], "conf": {"chunk_size": 2},
         "env": env("killed", NARRATION_FAULTS=json.dumps({"step": "synthesize", "kill_mid_item": 1}))},
        {"name": "synth", "when": when["synth"], "conf": {}, "env": env("synth", NARRATION_SYNTHESIZER="bogus")},
        {"name": "google", "when": when["google"], "conf": {"timing_method": "google"}, "env": env("google")},
        {"name": "nobucket", "when": when["nobucket"], "conf": {},
         "env": {"NARRATION_BUCKET": f"missing-{uuid.uuid4().hex[:8]}"}},
        {"name": "endpoint", "when": when["endpoint"], "conf": {},
         "env": env("endpoint", NARRATION_S3_ENDPOINT_URL=wrong, AIRFLOW_CONN_AWS_DEFAULT=json.dumps(conn))},
        {"name": "held", "when": when["held"], "conf": {}, "env": env("held"),
         "before": [{"bucket": buckets["held"].bucket, "key": _lock_key("incoming/held.jsonl"), "op": "put",
                     "text": HOLDER}]},
    ]
    runs = run_dags(PLAN, tmp_path_factory.mktemp("fault-runs"), timeout_s=1500)
    for name, run in runs.items():
        print(f"{name}: {run.state} in {wall_s(run):.1f} s")
    return Suite(runs, buckets)


def items_root(batch_id: str) -> str:
    return BatchLayout(batch_id).root + "items/"


def report(storage: Storage, batch_id: str, snapshot: str | None = None) -> dict[str, dict]:
    """Item id -> its row in report.csv, after checking that report.html and summary.json say the same (as a run
    left them, when ``snapshot`` names it)."""
    layout = BatchLayout(batch_id)
    at = f"snapshots/{snapshot}/" if snapshot else ""
    rows = list(csv.DictReader(io.StringIO(storage.get_text(at + layout.report_csv))))
    summary = storage.get_json(at + layout.summary)
    page = storage.get_text(at + layout.report_html)
    assert summary["by_status"] == dict(Counter(r["status"] for r in rows))
    assert summary["items"] == len(rows)
    sections = dict(re.findall(r'<section class="item" id="item-([^"]+)"><h2>[^<]+ <small>([a-z_]+)</small>', page))
    by_item = {r["item_id"]: r for r in rows if r["item_id"]}
    assert sections == {item: row["status"] for item, row in by_item.items()}
    for item, row in by_item.items():  # a link for exactly the outputs the row names
        named = {kind for kind in ("audio", *FORMATS) if row[f"{kind}_key"]}
        assert set(summary["downloads"]["items"].get(item, {})) == named, item
    return by_item


def statuses(rows: dict[str, dict]) -> dict[str, str]:
    return {item: row["status"] for item, row in rows.items()}


def manifests(storage: Storage) -> dict[str, str]:
    """Every manifest object -> the lifecycle prefix it is under."""
    out = {}
    for prefix in ("incoming/", "processing/", "processed/", "incomplete/", "failed/"):
        for key in storage.list_keys(prefix):
            out[key.rsplit("/", 1)[1]] = prefix.rstrip("/")
    return out


def step(run: DagRunRecord, task: str, index: int = 0) -> tuple:
    xcom = run.xcoms[(task, index)]
    return xcom["model_loads"], xcom["skipped"], [i["status"] for i in xcom["items"]]


# -- corrupt outputs, repaired; an item that cannot be repaired; force_rerender on the same run -------------------


def test_a_rerun_repairs_corrupt_and_truncated_outputs_and_the_report_never_goes_stale(suite):
    storage, batch = suite.buckets["repair"], suite.batch_id("repair-clean")
    clean, corrupted = suite.runs["repair-clean"], suite.runs["repair-corrupted"]
    assert clean.state == corrupted.state == "success", corrupted.log[-3000:]
    assert corrupted.run_id == clean.run_id, "the same run again, as a cleared run"

    # Synthesis re-checked every audio file: r1 (garbage bytes) and r2 (cut to 60 bytes) were redone, r3 and r4
    # reused. r1's new take failed (an injected fault), so r1 cannot be repaired on this run.
    assert "r2 again: s3://" in corrupted.log and "truncated WAV: its header states" in corrupted.log
    assert step(corrupted, "synthesize") == (1, 2, ["synthesis_failed", "synthesized", "synthesized", "synthesized"])
    assert step(corrupted, "align") == (1, 2, ["synthesis_failed", "aligned", "aligned", "aligned"])
    render = corrupted.xcoms[("render_subtitles", 0)]
    assert render["skipped"] == 1, "r4 only: r1 and r2 changed, r3's words JSON did not parse"
    assert {key: tries for key, tries in corrupted.tries.items() if corrupted.states[key] != "skipped"} == {
        key: 1 for key, state in corrupted.states.items() if state != "skipped"}, "no task needed a retry"

    rows = report(storage, batch, snapshot="repair-corrupted")
    assert statuses(rows) == {"r1": "synthesis_failed", "r2": "done", "r3": "done", "r4": "done"}
    assert "InjectedFault" in rows["r1"]["error"] and not rows["r1"]["audio_key"], "no link to the garbage audio"
    assert PLAN[1]["before"][0]["key"] == f"{items_root(batch)}r1/audio.wav", "the changes hit this batch"
    layout = BatchLayout(batch)
    assert storage.get_json(layout.subtitle("r3", "json"))["words"], "r3's words JSON was written again"
    summary = storage.get_json(f"snapshots/repair-corrupted/{layout.summary}")
    assert summary["manifests"][f"processing/{batch}/desk.jsonl"] == {
        "state": "incomplete", "valid_lines": 4, "delivered": 3, "missing": {"r1": ["audio", *FORMATS]}}

    # The run that can repair r1 completes the manifest and moves it on.
    repaired = suite.runs["repair-repaired"]
    assert repaired.state == "success"
    assert step(repaired, "synthesize") == (1, 3, ["synthesized"] * 4)


def test_the_manifest_waits_in_incomplete_until_a_run_completes_it(suite):
    storage, batch = suite.buckets["repair"], suite.batch_id("repair-clean")
    assert manifests(storage) == {"desk.jsonl": "processed"}
    moved = suite.runs["repair-corrupted"].xcoms[("finish_manifests", -1)]
    assert moved == {f"processed/{batch}/desk.jsonl": f"incomplete/{batch}/desk.jsonl"}
    assert suite.runs["repair-repaired"].xcoms[("finish_manifests", -1)] == {
        f"incomplete/{batch}/desk.jsonl": f"processed/{batch}/desk.jsonl"}
    assert storage.get_bytes(f"processed/{batch}/desk.jsonl") == jsonl(*REPAIR_LINES)


def test_a_rerun_with_nothing_changed_redoes_nothing(suite):
    unchanged = suite.runs["repair-unchanged"]
    assert unchanged.state == "success"
    assert step(unchanged, "synthesize") == (0, 4, ["synthesized"] * 4)
    assert step(unchanged, "align") == (0, 4, ["aligned"] * 4)
    assert unchanged.xcoms[("render_subtitles", 0)]["skipped"] == 4
    assert unchanged.xcoms[("finish_manifests", -1)] == {}, "the manifest stays in processed/"
    print(f"no-change re-run of 4 items: {wall_s(unchanged):.1f} s, synthesis compute "
          f"{unchanged.xcoms[('synthesize', 0)]['compute_s']} s, alignment compute "
          f"{unchanged.xcoms[('align', 0)]['compute_s']} s")


def test_force_rerender_on_a_cleared_run_redoes_every_item(suite):
    forced = suite.runs["repair-forced"]
    assert forced.state == "success" and forced.run_id == suite.runs["repair-clean"].run_id
    assert step(forced, "synthesize") == (1, 0, ["synthesized"] * 4)
    assert step(forced, "align") == (1, 0, ["aligned"] * 4)
    assert forced.xcoms[("render_subtitles", 0)]["skipped"] == 0
    assert statuses(report(suite.buckets["repair"], suite.batch_id("repair-clean"))) == {
        f"r{n}": "done" for n in range(1, 5)}


# -- honest lifecycle: every item failed, fallback unavailable, a worker killed on every try ----------------------


def test_every_item_failed_and_fallback_unavailable_leave_their_manifests_incomplete(suite):
    storage, batch = suite.buckets["lifecycle"], suite.batch_id("lifecycle-first")
    first = suite.runs["lifecycle-first"]
    assert first.state == "success", "item failures are the report's to tell; no task failed"
    summary = first.xcoms[("finish_manifests", -1)]
    assert summary == {f"processing/{batch}/{name}": f"{state}/{batch}/{name}" for name, state in [
        ("all-fail.jsonl", "incomplete"), ("fine.jsonl", "processed"), ("junk.jsonl", "failed"),
        ("no-fallback.jsonl", "incomplete")]}

    completed = suite.runs["lifecycle-completed"]
    assert completed.state == "success"
    rows = report(storage, batch)
    assert statuses(rows) == {"b1": "done", "b2": "done", "c1": "done", "c2": "done", "d1": "done"}
    assert manifests(storage) == {"all-fail.jsonl": "processed", "no-fallback.jsonl": "processed",
                                  "fine.jsonl": "processed", "junk.jsonl": "failed"}
    verdicts = storage.get_json(BatchLayout(batch).summary)["manifests"]
    assert {key.rsplit("/", 1)[1]: v["state"] for key, v in verdicts.items()} == {
        "all-fail.jsonl": "processed", "no-fallback.jsonl": "processed", "fine.jsonl": "processed",
        "junk.jsonl": "failed"}


def test_the_first_lifecycle_run_reported_what_each_item_lacked(suite):
    log = suite.runs["lifecycle-first"].log
    assert "manifest processing/" in log and "all-fail.jsonl: incomplete (0/2 valid lines delivered)" in log
    assert "no-fallback.jsonl: incomplete (1/2 valid lines delivered)" in log
    assert "fine.jsonl: processed (1/1 valid lines delivered)" in log


def test_a_synthesis_worker_killed_on_every_try_fails_the_run_and_leaves_the_manifest_incomplete(suite):
    storage, run = suite.buckets["killed"], suite.runs["killed"]
    batch = suite.batch_id("killed")
    assert run.state == "failed"
    assert run.tries[("synthesize", 0)] == 3 and run.states[("synthesize", 0)] == "failed"
    assert run.log.count("was killed by SIGKILL (out of memory, or killed from outside) before it printed") == 3
    assert run.states[("write_report", -1)] == "success" and run.states[("watch_failures", -1)] == "failed"
    rows = report(storage, batch)
    assert statuses(rows) == {"k1": "synthesis_failed", "k2": "synthesis_failed"}
    assert manifests(storage) == {"killed.jsonl": "incomplete"}


# -- configuration mistakes fail at planning, at once ---------------------------------------------------------


@pytest.mark.parametrize(("name", "message"), [
    ("synth", "configuration error: NARRATION_SYNTHESIZER (from environment): unknown synthesizer 'bogus'; "
              "valid values: espeak, f5tts"),
    ("google", "configuration error: timing_method (from Param): 'google' times every item with Google "
               "Speech-to-Text, which is not configured"),
    ("nobucket", "configuration error: NARRATION_BUCKET (from environment): bucket 'missing-"),
    ("endpoint", "configuration error: NARRATION_S3_ENDPOINT_URL (from environment): S3 at http://127.0.0.1:"),
    ("held", f"nothing to narrate: incoming/held.jsonl is already claimed by batch {HOLDER}"),
])
def test_a_configuration_mistake_fails_planning_on_its_first_try_and_claims_nothing(suite, name, message):
    run, storage = suite.runs[name], suite.buckets[name]
    assert run.state == "failed"
    assert message in run.log, run.log[-3000:]
    assert run.states[("plan_batch", -1)] == "failed" and run.tries[("plan_batch", -1)] == 1
    assert max(run.tries.values()) == 1, {k: v for k, v in run.tries.items() if v > 1}
    assert wall_s(run) < 40, f"{name} took {wall_s(run):.1f} s to fail"
    # Nothing was claimed or written: the manifest waits in incoming/ for a corrected run.
    assert manifests(storage) == {f"{name}.jsonl": "incoming"}
    assert list(storage.list_keys("batches/")) == []
    for task in ("write_report", "finish_manifests"):
        assert run.states[(task, -1)] == ("failed" if name == "endpoint" else "skipped"), (task, run.states)


def test_the_missing_bucket_error_lists_the_buckets_there_are(suite):
    assert re.search(r"does not exist at S3 at http://127\.0\.0\.1:\d+; valid values: .*"
                     + re.escape(suite.buckets["nobucket"].bucket), suite.runs["nobucket"].log)
