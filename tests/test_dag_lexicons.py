"""The ``lexicons`` Param through whole DAG runs (dag.test on SQLite, local S3, espeak + pocketsphinx)."""

from __future__ import annotations

import pytest

from narration.layout import BatchLayout
from narration.lexicons import upload_lexicon
from tests.dag_runs import jsonl, only_batch_id, results, run_dag, states, task_instances

NAMES = ('<?xml version="1.0" encoding="UTF-8"?>\n<lexicon version="1.0" '
         'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa" xml:lang="en-US">\n'
         '  <lexeme><grapheme>SQL</grapheme><alias>sequel</alias></lexeme>\n'
         '  <lexeme><grapheme>Nguyen</grapheme><phoneme>ˈwɪn</phoneme></lexeme>\n'
         '  <lexeme><grapheme>New York</grapheme><alias>noo yawk</alias></lexeme>\n'
         '</lexicon>\n')


@pytest.fixture()
def no_google(monkeypatch):
    for name in ("NARRATION_GOOGLE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"):
        monkeypatch.delenv(name, raising=False)


def test_the_batch_lexicons_param_reaches_every_line(storage, narrator, airflow_db, no_google):
    upload_lexicon(storage, "names", NAMES.encode(), "names.pls")
    upload_lexicon(storage, "client", b"grapheme,alias\nSQL,ess queue ell\n", "client.csv")
    text = "Mr. Nguyen teaches SQL in New York."
    storage.put_bytes("incoming/lex.jsonl", jsonl({"id": "l1", "text": text},
                                                  {"id": "l2", "text": "We teach SQL.", "lexicons": ["client"]}))
    dag_run = run_dag({"lexicons": ["names"], "formats": ["json", "srt"]})
    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS")
    rows = results(storage, only_batch_id(storage))
    row = rows["l1"]
    assert row["status"] == "done", row
    words = storage.get_json(row["json_key"])["words"]
    assert [(w["text"], w["spoken"]) for w in words] == [("Mr.", "mister"), ("Nguyen", "nguyen"),
                                                         ("teaches", "teaches"), ("SQL", "sequel"), ("in", "in"),
                                                         ("New York.", "noo yawk")]
    assert all(w["start_ms"] is not None for w in words)
    assert text in storage.get_text(row["srt_key"])
    # a line's own lexicon is searched before the batch's
    assert [(w["text"], w["spoken"]) for w in storage.get_json(rows["l2"]["json_key"])["words"]][-1] == (
        "SQL.", "ess queue ell")


def test_a_malformed_batch_lexicon_fails_the_run_before_claiming_without_retries(storage, narrator, airflow_db,
                                                                              no_google):
    storage.put_bytes("lexicons/names.pls", NAMES.replace("ˈwɪn", "w'In").encode())
    storage.put_bytes("incoming/lex.jsonl", jsonl({"id": "l1", "text": "Hello there."}))
    dag_run = run_dag({"lexicons": ["names"]})
    assert "failed" in str(dag_run.state).lower()
    [plan_ti] = task_instances(dag_run)["plan_batch"]
    assert states([plan_ti]) == ["failed"] and plan_ti.try_number == 1
    assert list(storage.list_keys("incoming/")) == ["incoming/lex.jsonl"]  # not claimed: fix the lexicon, rerun
    assert list(storage.list_keys("batches/")) == []


def test_a_malformed_lexicon_named_by_a_line_fails_planning_and_the_plan_says_why(storage, narrator, airflow_db,
                                                                                  no_google):
    storage.put_bytes("lexicons/names.pls", NAMES.replace("ˈwɪn", "w'In").encode())
    storage.put_bytes("incoming/lex.jsonl", jsonl({"id": "l1", "text": "Hello there.", "lexicons": ["names"]}))
    dag_run = run_dag({})
    assert "failed" in str(dag_run.state).lower()
    [plan_ti] = task_instances(dag_run)["plan_batch"]
    assert states([plan_ti]) == ["failed"] and plan_ti.try_number == 1
    plan = storage.get_json(BatchLayout(only_batch_id(storage)).plan)
    assert plan["error"] == (f"{storage.uri('lexicons/names.pls')}:4: entry 'Nguyen': phoneme \"w'In\": symbol "
                             "\"'\" (U+0027) is not IPA; use ˈ (U+02C8) for primary stress")
    assert plan["items"] == []
    batch_id = only_batch_id(storage)
    assert list(storage.list_keys("failed/")) == [f"failed/{batch_id}/lex.jsonl"]
