"""Task retries: every task of the DAG is retried at least twice, each wait longer than the one before (Airflow's
own retry arithmetic on the DAG as it is declared), and capped."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from tests.dag_runs import load_dag


def retry_waits(task, tries: int) -> list[timedelta]:
    from airflow.models.taskinstance import TaskInstance

    ti = TaskInstance(task=task, run_id="retry-policy", dag_version_id=uuid.uuid4())
    ti.end_date = datetime(2026, 1, 1, tzinfo=timezone.utc)
    waits = []
    for try_number in range(1, tries + 1):
        ti.try_number = try_number
        waits.append(ti.next_retry_datetime() - ti.end_date)
    return waits


def test_every_task_retries_with_exponential_backoff():
    dag = load_dag()
    for task in dag.tasks:
        assert task.retries >= 2, task.task_id
        first, second, third = retry_waits(task, 3)
        assert timedelta(seconds=20) <= first < timedelta(seconds=40), (task.task_id, first)
        assert second >= 2 * timedelta(seconds=20) and third >= 4 * timedelta(seconds=20), (task.task_id, second)
        assert first < second < third <= task.max_retry_delay, (task.task_id, first, second, third)
