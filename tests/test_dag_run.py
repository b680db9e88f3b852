"""Whole DAG runs on SQLite, against the S3 server on loopback, with the local runner (espeak + pocketsphinx)."""

from __future__ import annotations

import csv
import io

import pytest

from narration.layout import BatchLayout
from tests.dag_runs import jsonl, only_batch_id, results, run_dag, states, task_instances

LINES = [
    {"id": "n1", "text": "The council approved a budget of $4.5 million on Tuesday."},
    {"id": "n2", "text": "Doors open at 10:30 in the morning."},
    "{this line is not JSON",
    {"id": "n3", "text": "Dr. Hart called it a long-awaited decision."},
    {"id": "n4", "text": "Rain is expected tonight, with 12 degrees."},
    {"id": "n5", "text": "Nobody knows this voice.", "voice": "ghost"},
]


@pytest.fixture()
def no_google(monkeypatch):
    for name in ("NARRATION_GOOGLE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"):
        monkeypatch.delenv(name, raising=False)


def test_batch_runs_end_to_end_with_local_runner(storage, narrator, airflow_db, no_google):
    storage.put_bytes("incoming/news.jsonl", jsonl(*LINES))
    dag_run = run_dag({"chunk_size": 3})
    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS")

    batch_id = only_batch_id(storage)
    layout = BatchLayout(batch_id)
    items = results(storage, batch_id)
    assert set(items) == {"n1", "n2", "n3", "n4"}
    for item_id, row in items.items():
        assert row["status"] == "done", row
        assert row["timing_method"] == "pocketsphinx" and row["synthesizer"] == "espeak"
        for kind in ("audio", "srt", "vtt", "ass", "json", "csv"):
            key = row[f"{kind}_key"]
            assert key.startswith(layout.item_prefix(item_id)) and storage.exists(key), (item_id, kind)
        words = storage.get_json(row["json_key"])
        assert words["metadata"]["method"] == "pocketsphinx"
        script = next(line["text"] for line in LINES if isinstance(line, dict) and line.get("id") == item_id)
        assert " ".join(w["text"] for w in words["words"]) == script
        starts = [w["start_ms"] for w in words["words"]]
        assert starts == sorted(starts) and all(s is not None for s in starts)

    # Chunks of 3: two synthesis and two alignment instances, labelled by chunk and items; one model load each.
    tis = task_instances(dag_run)
    assert states(tis["synthesize"]) == ["success", "success"]
    assert [ti.rendered_map_index for ti in tis["synthesize"]] == ["c0000 n1..n3 (3)", "c0001 n4 (1)"]
    assert states(tis["google_align"]) == ["skipped"]

    report = list(csv.DictReader(io.StringIO(storage.get_text(layout.report_csv))))
    quarantined = {r["line"]: r for r in report if r["status"] == "quarantined"}
    assert set(quarantined) == {"3", "6"}
    assert "news.jsonl:3" in quarantined["3"]["error"] and "invalid JSON" in quarantined["3"]["error"]
    assert "unknown voice 'ghost'" in quarantined["6"]["error"]
    summary = storage.get_json(layout.summary)
    assert summary["by_status"] == {"done": 4, "quarantined": 2}
    assert summary["downloads"]["items"]["n1"]["srt"].startswith("http://127.0.0.1")

    # The manifest moved to processed/ with its bytes unchanged.
    assert list(storage.list_keys("incoming/")) == []
    assert storage.get_bytes(f"processed/{batch_id}/news.jsonl") == jsonl(*LINES)


def test_batch_with_no_valid_line_fails_clearly_and_reports_why(storage, narrator, airflow_db, no_google):
    storage.put_bytes("incoming/broken.jsonl", jsonl({"id": "a", "text": ""}, "nope"))
    dag_run = run_dag({})
    assert "failed" in str(dag_run.state).lower()
    tis = task_instances(dag_run)
    assert states(tis["plan_batch"]) == ["failed"]
    assert states(tis["write_report"]) == ["success"]
    batch_id = only_batch_id(storage)
    report = list(csv.DictReader(io.StringIO(storage.get_text(BatchLayout(batch_id).report_csv))))
    assert [(r["line"], r["status"]) for r in report] == [("1", "quarantined"), ("2", "quarantined")]
    assert storage.get_bytes(f"failed/{batch_id}/broken.jsonl") == jsonl({"id": "a", "text": ""}, "nope")
