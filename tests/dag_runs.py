"""Helpers for tests that run the whole DAG with ``dag.test()`` on SQLite against the local S3 server."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from narration.layout import BatchLayout

DAG_FILE = Path(__file__).resolve().parents[1] / "dags" / "narration_batch.py"


def load_dag():
    """Import the DAG file afresh, so runner configuration in the environment is read again."""
    os.environ.setdefault("NARRATION_BATCH_DEADLINE_H", "0")  # dag.test cannot run a DAG with a deadline alert
    spec = importlib.util.spec_from_file_location("narration_batch_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.narration_batch()


def run_dag(conf: dict):
    dag = load_dag()
    return dag.test(run_conf=conf)


def task_instances(dag_run) -> dict[str, list]:
    """Task id -> its task instances (one per map index), from the metadata DB."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id)
        ).all()
        out: dict[str, list] = {}
        for ti in tis:
            session.expunge(ti)
            out.setdefault(ti.task_id, []).append(ti)
    for group in out.values():
        group.sort(key=lambda ti: ti.map_index)
    return out


def states(tis: list) -> list[str]:
    return [str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in tis]


def only_batch_id(storage) -> str:
    batches = {k.split("/")[1] for k in storage.list_keys("batches/")}
    assert len(batches) == 1, batches
    return batches.pop()


def results(storage, batch_id: str) -> dict[str, dict]:
    layout = BatchLayout(batch_id)
    plan = storage.get_json(layout.plan)
    return {i["item_id"]: storage.get_json_or_none(layout.result(i["item_id"])) for i in plan["items"]}


def jsonl(*objs) -> bytes:
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs).encode()
