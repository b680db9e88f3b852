"""The whole DAG under faults and re-runs (dag.test() on SQLite, local runner, espeak + pocketsphinx, S3 on
loopback). Three DAG runs in all: a clean batch, the same batch run again, and a batch that meets a killed
worker, injected backend failures and an S3 outage. The security scan reads what those runs left behind."""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from narration.dev.local_s3 import LOCAL_SECRET_KEY
from narration.layout import SUBTITLE_FORMATS, BatchLayout
from narration.storage import Storage
from tests.dag_runs import jsonl
from tests.reliability.runs import ITEM_FILES, DagRunRecord, item_files, new_bucket, run_dags
from tests.reliability.s3proxy import OutageProxy

pytestmark = pytest.mark.dag_run

# -- a clean batch, then the same batch again ---------------------------------------------------------------

CLEAN_LINES = [
    {"id": "n1", "text": "The council approved a budget of $4.5 million on Tuesday."},
    {"id": "n2", "text": "Doors open at 10:30 in the morning."},
    {"id": "n3", "text": "Dr. Hart called it a long-awaited decision."},
]
CLEAN_WHEN = datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc)


def test_a_rerun_of_a_finished_batch_does_no_work_and_changes_no_output(batches):
    first, again, storage = batches.first, batches.again, batches.clean
    layout = BatchLayout(batches.clean_id)
    assert first.state == again.state == "success"
    assert first.run_id == again.run_id and again.xcoms[("synthesize", 0)]["batch_id"] == batches.clean_id
    for step in ("synthesize", "align"):
        assert first.xcoms[(step, 0)]["model_loads"] == 1
        done = again.xcoms[(step, 0)]
        assert (done["model_loads"], done["skipped"], done["compute_s"]) == (0, 3, 0.0), (step, done)
    assert again.xcoms[("render_subtitles", 0)]["skipped"] == 3

    # Nothing under the batch was written by the re-run but the report (its page and summary re-sign links):
    # every output is the very object the first run wrote, so byte for byte the same.
    rewritten = {key for key in storage.list_keys(layout.root)
                 if storage.head(key)["LastModified"] >= again.began.replace(microsecond=0)}
    assert rewritten == {layout.report_csv, layout.report_html, layout.summary}, rewritten
    assert item_files(storage, batches.clean_id) == {f"n{n}": ITEM_FILES for n in range(1, 4)}
    rows = list(csv.DictReader(io.StringIO(storage.get_text(layout.report_csv))))
    assert [(r["item_id"], r["status"]) for r in rows] == [(f"n{n}", "done") for n in range(1, 4)]
    assert storage.exists(f"processed/{batches.clean_id}/nightly.jsonl")


def test_presigned_links_expire_as_configured_and_cover_only_the_batch(batches):
    storage = batches.clean
    layout = BatchLayout(batches.clean_id)
    summary = storage.get_json(layout.summary)
    assert summary["presigned_url_expiry_s"] == 3600
    urls = [summary["downloads"]["report_csv"], summary["downloads"]["report_html"]]
    urls += [u for links in summary["downloads"]["items"].values() for u in links.values()]
    assert len(urls) == 2 + 3 * 8  # the reports, and per item the audio master and seven subtitle/word files
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        assert parts.path.startswith(f"/{storage.bucket}/{layout.root}"), url
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["3600"]
        signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        assert timedelta(0) <= datetime.now(timezone.utc) - signed_at < timedelta(hours=1)
        assert "X-Amz-Security-Token" not in query and LOCAL_SECRET_KEY not in url
    html = storage.get_text(layout.report_html)
    assert "X-Amz-Expires=3600" in html and "voices/" not in html
    assert urllib.request.urlopen(summary["downloads"]["items"]["n1"]["srt"], timeout=5).read().startswith(b"1\n")


# -- a batch that meets a killed worker, crashing items and an S3 outage ------------------------------------

FAULT_LINES = [
    {"id": "f1", "text": "The first item of the night."},
    {"id": "f2", "text": "The worker is killed after this item."},
    "{this line is not JSON",
    {"id": "f3", "text": "This item crashes the synthesizer."},
    "",
    {"id": "../etc/passwd", "text": "An id that tries to leave its folder."},
    {"id": "f4", "text": "S3 goes away while this item is timed."},
]
FAULT_WHEN = datetime(2026, 3, 3, 2, 0, tzinfo=timezone.utc)
FAULTS = [{"step": "synthesize", "kill_after": 2}, {"step": "synthesize", "fail_items": ["f3"]}]


@dataclass
class Batches:
    clean: Storage
    clean_id: str
    first: DagRunRecord
    again: DagRunRecord
    faults: Storage
    faults_id: str
    faulty: DagRunRecord
    proxy: OutageProxy


@pytest.fixture(scope="module")
def batches(s3_server, airflow_db, narrator_wav, tmp_path_factory) -> Batches:
    """A clean batch, the same batch again, and a batch under faults, run in one Airflow process."""
    clean = new_bucket("clean", narrator_wav)
    clean.put_bytes("incoming/nightly.jsonl", jsonl(*CLEAN_LINES))
    clean_env = {"NARRATION_BUCKET": clean.bucket, "NARRATION_PRESIGN_EXPIRY_S": "3600"}

    faults = new_bucket("faults", narrator_wav)
    faults.put_bytes("incoming/faults.jsonl", jsonl(*FAULT_LINES))
    proxy = OutageProxy(s3_server.port).start()
    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    conn["extra"]["endpoint_url"] = proxy.endpoint_url
    # Few botocore attempts: the outage outlasts them, so the storage layer's own backoff (which logs) rides it out.
    fault_env = {"NARRATION_BUCKET": faults.bucket, "NARRATION_S3_ENDPOINT_URL": proxy.endpoint_url,
                 "NARRATION_S3_MAX_ATTEMPTS": "2", "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(conn),
                 "NARRATION_FAULTS": json.dumps(FAULTS)}
    # S3 goes away when the align worker fetches f4's audio, and comes back 3 s later.
    proxy.fail_when(rb"GET /[^ ]*/items/f4/audio\.wav", outage_s=3.0)

    runs = [{"name": "first", "when": CLEAN_WHEN.isoformat(), "conf": {"chunk_size": 3}, "env": clean_env},
            {"name": "again", "when": CLEAN_WHEN.isoformat(), "conf": {"chunk_size": 3}, "env": clean_env},
            {"name": "faults", "when": FAULT_WHEN.isoformat(), "conf": {"chunk_size": 4}, "env": fault_env}]
    try:
        records = run_dags(runs, tmp_path_factory.mktemp("dag-runs"))
    finally:
        proxy.restore()
    yield Batches(clean, BatchLayout(records["first"].xcoms[("synthesize", 0)]["batch_id"]).batch_id,
                  records["first"], records["again"], faults,
                  BatchLayout(records["faults"].xcoms[("synthesize", 0)]["batch_id"]).batch_id,
                  records["faults"], proxy)
    proxy.stop()


def test_after_faults_every_valid_item_has_complete_outputs_exactly_once(batches):
    run, storage, batch_id = batches.faulty, batches.faults, batches.faults_id
    assert run.state == "success", run.log[-3000:]

    # The killed synthesis worker was retried by Airflow and redid only the items it had not finished.
    assert "CHAOS HOOK ACTIVE" in run.log and "killing worker process" in run.log
    assert run.tries[("synthesize", 0)] == 2 and run.states[("synthesize", 0)] == "success"
    retried = run.xcoms[("synthesize", 0)]
    assert (retried["model_loads"], retried["skipped"]) == (1, 2)
    # The injected backend exception failed f3 alone; its chunk went on.
    assert [(i["item_id"], i["status"]) for i in retried["items"]] == [
        ("f1", "synthesized"), ("f2", "synthesized"), ("f3", "synthesis_failed"), ("f4", "synthesized")]
    # The S3 outage hit the align worker mid-chunk; it waited S3 out and finished on its first try.
    assert len(batches.proxy.outages) == 1 and b"items/f4/audio.wav" in batches.proxy.triggered_by
    assert run.tries[("align", 0)] == 1 and run.states[("align", 0)] == "success"
    assert "unavailable" in run.log and "retrying" in run.log

    files = item_files(storage, batch_id)
    assert files == {**{i: ITEM_FILES for i in ("f1", "f2", "f4")}, "f3": {"synthesis.json", "result.json"}}, files
    for item_id in ("f1", "f2", "f4"):
        row = storage.get_json(BatchLayout(batch_id).result(item_id))
        assert row["status"] == "done" and row["timing_method"] == "pocketsphinx"
        words = storage.get_json(row["json_key"])["words"]
        assert words and all(w["start_ms"] is not None for w in words)


def test_after_faults_the_report_accounts_for_every_input_line(batches):
    storage, layout = batches.faults, BatchLayout(batches.faults_id)
    rows = list(csv.DictReader(io.StringIO(storage.get_text(layout.report_csv))))
    non_blank = [n for n, line in enumerate(FAULT_LINES, start=1) if line != ""]
    assert sorted(int(r["line"]) for r in rows) == non_blank
    assert all(r["manifest"] == "faults.jsonl" for r in rows)
    by_line = {int(r["line"]): r for r in rows}
    assert {n: by_line[n]["status"] for n in non_blank} == {
        1: "done", 2: "done", 3: "quarantined", 4: "synthesis_failed", 6: "quarantined", 7: "done"}
    assert "invalid JSON" in by_line[3]["error"] and "id must be" in by_line[6]["error"]
    assert "InjectedFault" in by_line[4]["error"]
    # f3 has no audio: the manifest waits in incomplete/ (not processed/), and the summary says what is missing.
    assert storage.get_bytes(f"incomplete/{batches.faults_id}/faults.jsonl") == jsonl(*FAULT_LINES)
    verdict = storage.get_json(layout.summary)["manifests"][f"processing/{batches.faults_id}/faults.jsonl"]
    assert verdict == {"state": "incomplete", "valid_lines": 4, "delivered": 3,
                       "missing": {"f3": ["audio", *SUBTITLE_FORMATS]}}


# -- security: what the runs left behind --------------------------------------------------------------------


def test_no_credentials_in_xcom_logs_reports_or_rendered_fields(batches):
    from airflow.utils.session import create_session
    from sqlalchemy import text as sql

    assert os.environ["AWS_SECRET_ACCESS_KEY"] == LOCAL_SECRET_KEY  # the secret the workers were given
    places: dict[str, str] = {}
    for name, run in (("clean", batches.first), ("clean-again", batches.again), ("faults", batches.faulty)):
        assert "synthesized" in run.log and "aligned" in run.log, "the task logs hold the workers' output"
        places[f"task log of the {name} run"] = run.log
    for path in Path(os.environ["AIRFLOW_HOME"], "logs").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_text(errors="replace")
    with create_session() as session:
        xcoms = session.execute(sql("select * from xcom")).fetchall()
        rendered = session.execute(sql("select * from rendered_task_instance_fields")).fetchall()
    assert xcoms and rendered
    places["xcom table"] = "\n".join(map(str, xcoms))
    places["rendered task fields"] = "\n".join(map(str, rendered))
    for storage in (batches.clean, batches.faults):
        for key in storage.list_keys("batches/"):
            if not key.endswith(".wav"):
                places[storage.uri(key)] = storage.get_text(key)
    leaks = [where for where, text in places.items() if LOCAL_SECRET_KEY in text]
    assert leaks == []
