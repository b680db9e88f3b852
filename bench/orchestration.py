"""Orchestration overhead: a 200-item batch through the whole DAG (``dag.test`` on SQLite, local runner, local S3).

Prints the DAG's wall time against the summed in-worker time (model loads + per-item compute, from every chunk's
result line), the overhead share, and the number of model loads (it must equal the number of chunks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["The council", "A spokesperson", "Dr. Hart", "The museum", "Our reporter", "The station", "The team",
            "A local baker", "The weather service", "Rail operators"]
VERBS = ["announced", "confirmed", "reported", "denied", "welcomed", "questioned", "described", "explained"]
OBJECTS = ["a budget of ${n}.5 million", "{n} new jobs in the area", "a delay of {n} minutes",
           "plans for {n} homes by 2030", "a rise of {n}% since last year", "the 3rd phase of the project",
           "a meeting at 10:30 on Tuesday", "{n},000 visitors over the weekend"]


def sentences(count: int) -> list[str]:
    out = []
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        verb = VERBS[(n // len(SUBJECTS)) % len(VERBS)]
        obj = OBJECTS[(n * 7) % len(OBJECTS)].format(n=n % 47 + 2)
        out.append(f"{subject} {verb} {obj}, according to item {n + 1}.")
    return out


def _xcom_results(dag_run) -> list[dict]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(XComModel).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
            XComModel.key == "return_value")).all()
        values = []
        for row in rows:
            value = row.value
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    continue
            if isinstance(value, dict) and "step" in value:
                values.append(value)
    return values


def _task_durations(dag_run) -> dict[str, dict]:
    """Per task: instances that ran and their summed start-to-end seconds (Airflow's own bookkeeping)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, dict] = {}
    with create_session() as session:
        for ti in session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_run.dag_id,
                                                             TaskInstance.run_id == dag_run.run_id)):
            if ti.start_date and ti.end_date:
                task = out.setdefault(ti.task_id, {"instances": 0, "seconds": 0.0})
                task["instances"] += 1
                task["seconds"] += (ti.end_date - ti.start_date).total_seconds()
    return out


def run(items: int, chunk_size: int) -> dict:
    from narration.audio import to_wav_bytes
    from narration.local_s3 import LocalS3Server
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.storage import Storage
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer
    from narration.voices import upload_voice

    server = LocalS3Server().start()
    try:
        server.apply_env()
        storage = Storage.from_settings(Settings())
        storage.ensure_bucket()
        text = "This is the narrator's reference voice."
        synth = EspeakSynthesizer(Settings())
        synth.load()
        ref = synth.synthesize(normalize_script(text), Voice("narrator", "en", text))
        upload_voice(storage, "narrator", to_wav_bytes(ref.audio, ref.sample_rate), text, replace=True)
        manifest = "\n".join(json.dumps({"id": f"b{n:04d}", "text": t}) for n, t in enumerate(sentences(items)))
        storage.put_text("incoming/bench.jsonl", manifest)

        from tests.dag_runs import load_dag

        dag = load_dag()
        started = time.perf_counter()
        dag_run = dag.test(run_conf={"chunk_size": chunk_size})
        wall = time.perf_counter() - started
        results = _xcom_results(dag_run)
        tasks = _task_durations(dag_run)
    finally:
        server.stop()

    by_step: dict[str, dict] = {}
    for result in results:
        step = by_step.setdefault(result["step"], {"chunks": 0, "model_loads": 0, "load_s": 0.0, "compute_s": 0.0,
                                                   "worker_wall_s": 0.0, "items": 0})
        step["chunks"] += 1
        step["model_loads"] += result["model_loads"]
        step["load_s"] += result["model_load_s"]
        step["compute_s"] += result["compute_s"]
        step["worker_wall_s"] += result["wall_s"]
        step["items"] += len(result["items"])
    in_worker = sum(s["load_s"] + s["compute_s"] for s in by_step.values())
    chunks = -(-items // chunk_size)
    return {"state": str(dag_run.state), "items": items, "chunk_size": chunk_size, "chunks": chunks,
            "dag_wall_s": round(wall, 2), "in_worker_s": round(in_worker, 2),
            "overhead_s": round(wall - in_worker, 2),
            "overhead_share_of_compute": round((wall - in_worker) / in_worker, 3),
            "steps": by_step, "tasks": tasks}


def print_table(figures: dict) -> None:
    print(f"orchestration: {figures['items']} items, chunk size {figures['chunk_size']} -> {figures['chunks']} "
          f"chunks; DAG run state {figures['state']}")
    print(f"{'step':<12} {'chunks':>6} {'items':>6} {'loads':>6} {'load s':>8} {'compute s':>10} {'worker wall s':>14}")
    for name, step in figures["steps"].items():
        print(f"{name:<12} {step['chunks']:>6} {step['items']:>6} {step['model_loads']:>6} {step['load_s']:>8.2f} "
              f"{step['compute_s']:>10.2f} {step['worker_wall_s']:>14.2f}")
    print(f"DAG wall time {figures['dag_wall_s']:.1f} s; "
          f"in-worker time (loads + compute) {figures['in_worker_s']:.1f} s;"
          f" overhead {figures['overhead_s']:.1f} s = {figures['overhead_share_of_compute']:.0%} of in-worker time "
          f"(goal <= 10 %)")
    tasks = figures.get("tasks", {})
    if tasks:
        print("where the DAG's wall time went (task instances start to end; the rest is dag.test between tasks):")
        for name, task in sorted(tasks.items(), key=lambda kv: -kv[1]["seconds"]):
            print(f"  {name:<18} {task['instances']:>3} x  {task['seconds']:>7.1f} s")
        between = figures["dag_wall_s"] - sum(t["seconds"] for t in tasks.values())
        print(f"  {'between tasks':<18}        {between:>7.1f} s")
    for name in ("synthesize", "align"):
        step = figures["steps"].get(name)
        if step:
            verdict = "ok" if step["model_loads"] == figures["chunks"] else "MISMATCH"
            print(f"model loads in {name}: {step['model_loads']} for {figures['chunks']} chunks ({verdict})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=50)
    args = parser.parse_args(argv)
    if "AIRFLOW_HOME" not in os.environ or not Path(os.environ["AIRFLOW_HOME"]).exists():
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="narration-bench-airflow-")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("NARRATION_BATCH_DEADLINE_H", "0")  # dag.test cannot run a DAG with a deadline alert
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "operators.pools"], check=True, capture_output=True)
    figures = run(args.items, args.chunk_size)
    print_table(figures)
    return figures


if __name__ == "__main__":
    main()
