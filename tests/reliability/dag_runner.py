"""Run the narration DAG with ``dag.test()`` in its own process, once per entry of a run plan, each for a fixed
logical date and run_after: running the same entry again re-runs the same batch (same run id, same batch id), as
clearing a DAG run would. One process serves every run, so Airflow starts once.

``python -m tests.reliability.dag_runner PLAN.json`` where the plan is a list of
``{"name": ..., "when": ISO 8601, "conf": {...}, "env": {...}, "before": [...]}``; ``before`` lists changes made to
S3 just before the run, as a fault would make them between runs: ``{"bucket", "key", "op": "put", "text"}``,
``{"bucket", "key", "op": "truncate", "bytes": N}`` (keep the first N bytes), ``{"bucket", "key", "op": "garbage",
"bytes": N}`` (replace with N random bytes) or ``{"bucket", "key", "op": "delete"}``. With ``"snapshot": BUCKET``
the run's report files are copied to ``snapshots/NAME/<their key>`` after it, so later runs cannot hide them.
Everything the runs log goes to stdout/stderr (the test keeps it as the task log); each run is framed by
``@@@ begin NAME`` and ``@@@ end NAME {json}`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone

MARK = "@@@"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", help="JSON file: the runs, in order")
    parser.add_argument("--retry-delay-s", type=float, default=None,
                        help="shorten every task's retry delay (the DAG's own is 20 s and up)")
    args = parser.parse_args()
    with open(args.plan) as fh:
        runs = json.load(fh)

    from tests.dag_runs import load_dag

    for run in runs:
        apply_changes(run.get("before", []))
        saved = {key: os.environ.get(key) for key in run.get("env", {})}
        os.environ.update(run.get("env", {}))
        # S3 stamps objects to the second: begin in a fresh second, so the previous run's last writes (the render
        # of its final chunk can land within a second of its end) read as older than this run's began.
        time.sleep(1.05 - time.time() % 1)
        print(f"{MARK} begin {run['name']} {datetime.now(timezone.utc).isoformat()}", flush=True)
        try:
            dag = load_dag()
            if args.retry_delay_s is not None:
                for task in dag.tasks:
                    task.retry_delay = timedelta(seconds=args.retry_delay_s)
            when = datetime.fromisoformat(run["when"])
            dag_run = dag.test(run_after=when, logical_date=when, run_conf=run.get("conf", {}))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        sys.stderr.flush()
        if run.get("snapshot"):
            snapshot_reports(run["snapshot"], run["name"])
        result = {"state": str(getattr(dag_run.state, "value", dag_run.state)), "run_id": dag_run.run_id,
                  "ended": datetime.now(timezone.utc).isoformat(), "task_instances": task_instances(dag_run.run_id)}
        print(f"{MARK} end {run['name']} {json.dumps(result)}", flush=True)
    return 0


def apply_changes(changes: list[dict]) -> None:
    from narration.settings import Settings
    from narration.storage import Storage

    for change in changes:
        storage = Storage.from_settings(Settings(bucket=change["bucket"]))
        key, op = change["key"], change["op"]
        if op == "put":
            storage.put_text(key, change["text"])
        elif op == "truncate":
            storage.put_bytes(key, storage.get_bytes(key)[:change["bytes"]])
        elif op == "garbage":
            storage.put_bytes(key, random.Random(key).randbytes(change["bytes"]))
        elif op == "delete":
            storage.delete(key)
        else:
            raise ValueError(f"unknown change {op!r}")
        print(f"{MARK} changed s3://{change['bucket']}/{key}: {op}", flush=True)


def snapshot_reports(bucket: str, name: str) -> None:
    from narration.settings import Settings
    from narration.storage import Storage

    storage = Storage.from_settings(Settings(bucket=bucket))
    for key in storage.list_keys("batches/"):
        if key.rsplit("/", 1)[1] in ("report.csv", "report.html", "summary.json"):
            storage.copy(key, f"snapshots/{name}/{key}")


def task_instances(run_id: str) -> list[dict]:
    """Each task instance of the run with its try number, state and returned XCom (read now: a later run for the
    same logical date replaces this one, and its rows with it)."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        xcoms = {(t, m): v for t, m, v in session.execute(text(
            "select task_id, map_index, value from xcom where run_id = :r and key = 'return_value'"), {"r": run_id})}
        rows = session.execute(text("select task_id, map_index, try_number, state from task_instance "
                                    "where run_id = :r"), {"r": run_id}).fetchall()
    out = []
    for task_id, map_index, try_number, state in rows:
        value = xcoms.get((task_id, map_index))
        out.append({"task_id": task_id, "map_index": map_index, "try_number": try_number, "state": state,
                    "xcom": json.loads(value) if isinstance(value, str) else value})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
