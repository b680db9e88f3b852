"""The batch-level timing branch: primary aligner, then Google Speech-to-Text, then a clear timing failure.

Google is a real gRPC Speech endpoint on loopback (narration.dev.speech_server) reached by the real client.
"""

from __future__ import annotations

import pytest

from narration.dev.speech_server import LocalSpeechServer
from narration.layout import BatchLayout
from tests.dag_runs import jsonl, only_batch_id, results, run_dag, states, task_instances

ITEMS = [
    {"id": "a1", "text": "The library opens in 2029 on Elm Street."},
    {"id": "a2", "text": "Rain is expected tonight."},
    {"id": "a3", "text": "The home side won three goals to one."},
    {"id": "a4", "text": "Trains will run every 20 minutes."},
    {"id": "a5", "text": "Thank you for listening."},
]


@pytest.fixture()
def google_endpoint(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with LocalSpeechServer() as server:
        monkeypatch.setenv("NARRATION_GOOGLE_ENDPOINT", server.address)
        monkeypatch.setenv("NARRATION_GOOGLE_INSECURE", "true")
        yield server


@pytest.fixture()
def no_google(monkeypatch):
    for name in ("NARRATION_GOOGLE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"):
        monkeypatch.delenv(name, raising=False)


def _ok(dag_run) -> bool:
    return "success" in str(dag_run.state).lower()


def test_items_failing_primary_timing_and_only_they_go_to_google(storage, narrator, airflow_db, google_endpoint):
    storage.put_bytes("incoming/fallback.jsonl", jsonl(*ITEMS))
    dag_run = run_dag({"chunk_size": 2, "force_fallback": ["a2", "a5"]})
    assert _ok(dag_run)

    tis = task_instances(dag_run)
    assert states(tis["route_timing"]) == ["success"]
    # a2 and a5 fit one fallback chunk of 2: exactly one Google task instance, labelled with exactly those items.
    assert [(ti.map_index, ti.rendered_map_index) for ti in tis["google_align"]] == [(0, "f0000 a2 a5")]
    assert states(tis["google_align"]) == ["success"]
    assert google_endpoint.calls == 2

    batch_id = only_batch_id(storage)
    layout = BatchLayout(batch_id)
    rows = results(storage, batch_id)
    for item_id, row in rows.items():
        assert row["status"] == "done" and storage.exists(row["srt_key"]), item_id
        went_to_google = item_id in {"a2", "a5"}
        assert row["timing_method"] == ("google" if went_to_google else "pocketsphinx"), item_id
        # Items the primary timed were not processed again by the fallback.
        assert storage.exists(layout.timing(item_id, "google")) is went_to_google
        if went_to_google:
            assert row["fallback_reason"] == "routed to fallback by force_fallback"
            words = storage.get_json(row["json_key"])
            assert words["metadata"]["method"] == "google"
            assert words["metadata"]["attempted"] == ["google"]
            assert words["metadata"]["resolution_ms"] == 100
            assert all(w["start_ms"] % 100 == 0 for w in words["words"] if w["start_ms"] is not None)
    summary = storage.get_json(layout.summary)
    assert summary["by_timing_method"] == {"pocketsphinx": 3, "google": 2}
    assert summary["fallbacks"] == 2


def test_timing_method_google_sends_every_item_to_google(storage, narrator, airflow_db, google_endpoint):
    storage.put_bytes("incoming/all-google.jsonl", jsonl(*ITEMS[:3]))
    dag_run = run_dag({"chunk_size": 2, "timing_method": "google"})
    assert _ok(dag_run)
    tis = task_instances(dag_run)
    assert states(tis["google_align"]) == ["success", "success"]
    rows = results(storage, only_batch_id(storage))
    assert {row["timing_method"] for row in rows.values()} == {"google"}
    assert {row["fallback_reason"] for row in rows.values()} == {"timing_method=google requested"}
    assert all(row["status"] == "done" for row in rows.values())


def test_without_google_fallback_items_end_timing_failed_with_audio(storage, narrator, airflow_db, no_google):
    storage.put_bytes("incoming/no-google.jsonl", jsonl(*ITEMS[:3]))
    dag_run = run_dag({"chunk_size": 3, "force_fallback": ["a3"]})
    assert _ok(dag_run), "the batch finishes even though one item could not be timed"
    tis = task_instances(dag_run)
    assert states(tis["google_align"]) == ["skipped"]
    rows = results(storage, only_batch_id(storage))
    failed = rows["a3"]
    assert failed["status"] == "timing_failed" and failed["timing_method"] is None
    assert "force_fallback" in failed["fallback_reason"] and "not configured" in failed["fallback_reason"]
    assert failed["audio_key"] and storage.exists(failed["audio_key"]) and failed["srt_key"] is None
    assert rows["a1"]["status"] == rows["a2"]["status"] == "done"
