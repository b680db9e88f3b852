"""DAG hygiene: every DAG imports cleanly and carries docs, tags, owners, retries and the expected shape."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "narration_batch" in dagbag.dag_ids


def test_every_dag_has_docs_tags_owner_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md, dag_id
        assert dag.tags, dag_id
        assert dag.catchup is False, dag_id
        for task in dag.tasks:
            assert task.owner == "narration", (dag_id, task.task_id)
            assert task.retries >= 2, (dag_id, task.task_id)


def test_narration_batch_schedule_params_and_shape(dagbag):
    dag = dagbag.dags["narration_batch"]
    assert dag.timetable.expression == "0 2 * * *" and str(dag.timetable.timezone) in {"UTC", "Timezone('UTC')"}
    assert set(dag.params) >= {"manifest", "voice", "language", "timing_method", "chunk_size", "formats"}
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(tasks) == {"plan_batch", "synthesize", "align", "plan_fallback", "route_timing", "google_align",
                          "render_subtitles", "write_report", "finish_manifests", "watch_failures"}
    assert tasks["route_timing"].downstream_task_ids == {"google_align", "render_subtitles", "watch_failures"}
    assert tasks["render_subtitles"].trigger_rule == "none_failed_min_one_success"
    assert tasks["write_report"].trigger_rule == "all_done"
    assert tasks["watch_failures"].trigger_rule == "one_failed"
    assert tasks["watch_failures"].upstream_task_ids == set(tasks) - {"watch_failures"}
    assert tasks["synthesize"].pool == "narration_gpu"
    # Workers are mapped over chunks and labelled in the UI.
    assert tasks["synthesize"].map_index_template and tasks["align"].map_index_template


def test_params_reject_bad_trigger_values(dagbag):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag.dags["narration_batch"]
    copy.deepcopy(dag.params).validate()  # the defaults are valid
    for name, bad in [("chunk_size", 0), ("timing_method", "guesswork"), ("formats", ["mp4"])]:
        params = copy.deepcopy(dag.params)
        with pytest.raises(ParamValidationError):
            params[name] = bad
            params.validate()
