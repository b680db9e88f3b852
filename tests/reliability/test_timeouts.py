"""A hung worker is killed when its chunk's time budget runs out, retried, and its items are reported, not lost
(dag.test() on SQLite, local runner, espeak + pocketsphinx, S3 on loopback)."""

from __future__ import annotations

import csv
import io
import subprocess
from datetime import datetime, timezone

import pytest

from narration.layout import BatchLayout
from tests.dag_runs import jsonl
from tests.reliability.runs import new_bucket, run_dags

pytestmark = pytest.mark.dag_run

LINES = [
    {"id": "h1", "text": "The first chunk finishes."},
    {"id": "h2", "text": "So does its second item."},
    {"id": "h3", "text": "This item hangs the synthesizer."},
    {"id": "h4", "text": "And this one waits behind it."},
]
BASE_S, PER_ITEM_S = 20, 2  # a two-item chunk may take 24 s per try


def test_a_hung_worker_is_killed_at_its_time_budget_and_its_items_are_reported(tmp_path, s3_server, narrator_wav,
                                                                               airflow_db):
    storage = new_bucket("hang", narrator_wav)
    storage.put_bytes("incoming/hang.jsonl", jsonl(*LINES))
    env = {"NARRATION_BUCKET": storage.bucket, "NARRATION_WORKER_TIMEOUT_BASE_S": str(BASE_S),
           "NARRATION_WORKER_TIMEOUT_PER_ITEM_S": str(PER_ITEM_S),
           "NARRATION_FAULTS": '{"step": "synthesize", "hang_items": ["h3"]}'}
    when = datetime(2026, 3, 9, 2, 0, tzinfo=timezone.utc)
    run = run_dags([{"name": "hang", "when": when.isoformat(), "conf": {"chunk_size": 2}, "env": env}],
                   tmp_path)["hang"]

    # The healthy chunk went through; the hung one was killed at its budget on every try, then failed.
    assert run.states[("synthesize", 0)] == "success" and run.states[("align", 0)] == "success"
    assert run.states[("synthesize", 1)] == "failed" and run.tries[("synthesize", 1)] == 3, run.log[-3000:]
    assert run.log.count("chunk c0001 h3..h4 (2): synthesize time budget 0:00:24") == 3
    assert run.log.count("AirflowTaskTimeout") >= 3 and "hanging in the synthesize backend call" in run.log
    assert run.state == "failed"  # watch_failures marks the run, after the report was written

    # No worker process of this batch outlived its task (other batches on the machine are not this test's).
    batch_id = BatchLayout(run.xcoms[("synthesize", 0)]["batch_id"]).batch_id
    leftover = subprocess.run(["pgrep", "-f", f"narration synthesize --chunk {BatchLayout(batch_id).root}chunks/"],
                              capture_output=True, text=True).stdout.split()
    assert leftover == [], leftover

    # Every line is accounted for: the finished items are done, the hung chunk's items say they did not complete.
    rows = {r["item_id"]: r for r in csv.DictReader(io.StringIO(storage.get_text(BatchLayout(batch_id).report_csv)))}
    assert sorted(rows) == ["h1", "h2", "h3", "h4"]
    assert rows["h1"]["status"] == rows["h2"]["status"] == "done"
    for item_id in ("h3", "h4"):
        assert rows[item_id]["status"] == "synthesis_failed" and rows[item_id]["error"], rows[item_id]
    summary = storage.get_json(BatchLayout(batch_id).summary)
    assert summary["by_status"] == {"done": 2, "synthesis_failed": 2}
    print({item_id: rows[item_id]["error"] for item_id in ("h3", "h4")})
