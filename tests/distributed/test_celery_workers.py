"""A distributed run: Postgres metadata DB, Redis broker, CeleryExecutor with two Celery worker processes, and the
real scheduler, dag-processor and api-server (tests/airflow_stack.py), all started here on loopback.

A REST-triggered batch spreads its chunks over both workers; then one worker is SIGKILLed in the middle of a chunk,
and the chunk is retried on the other worker without redoing or losing an item. So that the kill lands between two
items whatever the machine's speed, worker-2 alone runs with the chaos hook holding the second item of each chunk
(NARRATION_FAULTS hang_items); the retry on worker-1 runs without it. Component logs go to
$NARRATION_ARTIFACTS/distributed/logs (default ./artifacts/).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

from narration.layout import BatchLayout
from tests.airflow_stack import AirflowStack, voiced_bucket
from tests.airflow_stack import artifacts_dir as stage_artifacts
from tests.dag_runs import jsonl

pytestmark = pytest.mark.distributed

RUN_TIMEOUT_S = float(os.environ.get("NARRATION_SCHEDULER_TIMEOUT_S", "420"))
WORKER_STEPS = ("synthesize", "align")


def step_of(ti: dict) -> str:
    """The task's own name, without the id of a task group it belongs to."""
    return ti["task_id"].rsplit(".", 1)[-1]
SPREAD_ITEMS = [{"id": f"w{n}", "text": text} for n, text in enumerate([
    "The council met on Tuesday.", "Doors open at 10:30.", "Rain is expected tonight.", "The bridge reopens soon.",
    "Tickets cost five pounds.", "The library extends its hours."], start=1)]
KILL_ITEMS = [{"id": f"k{n}", "text": text} for n, text in enumerate([
    "The committee reviewed the cycle route.", "Residents spoke for an hour.", "A revised plan follows in spring.",
    "The decision is due in June."], start=1)]
KILL_CHUNK_SIZE = 2
LOST_WORKER, SURVIVOR = "worker-2", "worker-1"
# On the worker to be lost only: every chunk step blocks in its second item, after the first is stored.
HELD_ITEMS = [item["id"] for item in KILL_ITEMS[1::KILL_CHUNK_SIZE]]
HOLD_SECOND_ITEMS = json.dumps([{"step": step, "hang_items": HELD_ITEMS} for step in ("synthesize", "align")])
# A lost worker stops heartbeating; the scheduler fails its task after this and the retry goes to a live worker.
HEARTBEAT_TIMEOUT_S = 30


def artifacts_dir() -> Path:
    return stage_artifacts("distributed")


@pytest.fixture(scope="module")
def seeded_bucket(s3_server, narrator_wav) -> str:
    return voiced_bucket("celery", narrator_wav, {"incoming/spread.jsonl": jsonl(*SPREAD_ITEMS),
                                                  "incoming/kill.jsonl": jsonl(*KILL_ITEMS)})


@pytest.fixture(scope="module")
def s3(seeded_bucket):
    from narration.settings import Settings
    from narration.storage import Storage

    return Storage.from_settings(Settings(bucket=seeded_bucket))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server, seeded_bucket):
    log_dir = artifacts_dir() / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)  # this run's logs only
    log_dir.mkdir()
    stack = AirflowStack(
        tmp_path_factory.mktemp("airflow-home"), s3_server.env(seeded_bucket), log_dir, database="postgres",
        executor="celery", celery_workers=2, worker_env={LOST_WORKER: {"NARRATION_FAULTS": HOLD_SECOND_ITEMS}},
        extra_env={"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
                   "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"})
    with stack:
        stack.wait_for_workers()
        stack.wait_for_dag()
        yield stack


def batch_of(s3, manifest_name: str) -> BatchLayout:
    """The batch that claimed the manifest (its plan names the manifest's key)."""
    for key in s3.list_keys("batches/"):
        if key.endswith("/plan.json") and manifest_name in s3.get_text(key):
            return BatchLayout(key.split("/")[1])
    raise AssertionError(f"no batch planned {manifest_name}")


def assert_every_item_exactly_once(s3, layout: BatchLayout, item_ids: list[str]) -> None:
    results = sorted(key for key in s3.list_keys(layout.root + "items/") if key.endswith("/result.json"))
    assert results == sorted(layout.result(item_id) for item_id in item_ids)
    for item_id in item_ids:
        result = s3.get_json(layout.result(item_id))
        assert result["status"] == "done" and result["synthesizer"] == "espeak", result
        for kind in ("audio", "srt", "vtt", "json"):
            assert s3.exists(result[f"{kind}_key"]), (item_id, kind)
    report_ids = [row["item_id"] for row in csv.DictReader(io.StringIO(s3.get_text(layout.report_csv)))]
    assert sorted(report_ids) == sorted(item_ids), report_ids
    assert s3.get_json(layout.summary)["by_status"] == {"done": len(item_ids)}


def test_chunks_spread_over_both_workers(stack, s3):
    conf = {"chunk_size": 2, "formats": ["srt", "vtt", "json"], "manifest": "incoming/spread.jsonl"}
    run_id = stack.trigger(conf)["dag_run_id"]
    state = stack.wait_for_run(run_id, RUN_TIMEOUT_S)
    tis = stack.task_instances(run_id)
    assert state == "success", sorted((ti["task_id"], ti["map_index"], ti["state"]) for ti in tis)

    chunk_tis = [ti for ti in tis if step_of(ti) in WORKER_STEPS]
    assert len(chunk_tis) == 2 * 3 and {ti["state"] for ti in chunk_tis} == {"success"}
    hosts = {ti["hostname"] for ti in chunk_tis}
    assert hosts == set(stack.worker_names), sorted((ti["task_id"], ti["map_index"], ti["hostname"])
                                                      for ti in chunk_tis)
    ran = [ti for ti in tis if ti["state"] != "skipped"]
    assert {ti["hostname"] for ti in ran} <= set(stack.worker_names)  # every task that ran, ran on a Celery worker
    assert_every_item_exactly_once(s3, batch_of(s3, "spread.jsonl"), [item["id"] for item in SPREAD_ITEMS])


def chunk_items(s3, layout: BatchLayout, map_index: int) -> list[str]:
    """Item ids of the chunk a mapped worker task instance runs: the plan's chunks, in mapping order."""
    return s3.get_json(layout.plan)["chunks"][map_index]["item_ids"]


def records_written(s3, layout: BatchLayout, step: str, item_ids: list[str]) -> list[str]:
    """The chunk's items whose record for the step is stored (written last, so the item is done)."""
    key = (lambda item: layout.synthesis(item)) if step == "synthesize" else (
        lambda item: layout.timing(item, "pocketsphinx"))
    return [item for item in item_ids if s3.exists(key(item))]


def test_worker_killed_mid_chunk_its_chunk_is_retried_on_the_other_worker(stack, s3):
    conf = {"chunk_size": KILL_CHUNK_SIZE, "formats": ["srt", "vtt", "json"], "manifest": "incoming/kill.jsonl"}
    run_id = stack.trigger(conf)["dag_run_id"]
    layout = None

    def chunk_half_done():
        """A worker task whose chunk has some, but not all, items stored: (task instance, items, items done)."""
        nonlocal layout
        for ti in stack.task_instances(run_id):
            if step_of(ti) in WORKER_STEPS and ti["state"] == "running" and ti["hostname"] == LOST_WORKER:
                layout = layout or batch_of(s3, "kill.jsonl")
                items = chunk_items(s3, layout, ti["map_index"])
                done = records_written(s3, layout, step_of(ti), items)
                if 0 < len(done) < len(items):
                    return ti, items
        return None

    deadline = time.monotonic() + RUN_TIMEOUT_S
    victim = None
    while victim is None and time.monotonic() < deadline:
        victim = chunk_half_done()
        if victim is None:
            assert stack.run_state(run_id) not in ("success", "failed"), "the run ended before a kill could land"
            time.sleep(0.2)
    assert victim is not None, "no chunk was seen half done"
    ti, items = victim
    lost_worker = ti["hostname"]
    killed = stack.kill_worker(lost_worker)
    done_at_kill = records_written(s3, layout, step_of(ti), items)
    assert len(killed) >= 3 and 0 < len(done_at_kill) < len(items), (killed, done_at_kill)
    survivor = SURVIVOR

    state = stack.wait_for_run(run_id, RUN_TIMEOUT_S)
    tis = stack.task_instances(run_id)
    assert state == "success", sorted((t["task_id"], t["map_index"], t["state"]) for t in tis)

    tries = stack.tries(run_id, ti["task_id"], ti["map_index"])
    assert [(t["try_number"], t["hostname"]) for t in tries][:1] == [(1, lost_worker)]
    assert tries[0]["state"] == "failed" and tries[-1]["state"] == "success", tries
    assert tries[-1]["hostname"] == survivor and tries[-1]["try_number"] >= 2, tries
    # The retry reused the items stored before the kill and did only the rest.
    xcom = stack.api("GET", f"/dags/narration_batch/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/"
                            f"{ti['task_id']}/xcomEntries/return_value", params={"map_index": ti["map_index"]})
    result = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    assert result["skipped"] == len(done_at_kill) and len(result["items"]) == len(items), result
    assert_every_item_exactly_once(s3, layout, [item["id"] for item in KILL_ITEMS])
    print(f"\nkilled {lost_worker} ({len(killed)} processes) in {ti['task_id']} {ti['map_index']} after "
          f"{len(done_at_kill)} of {len(items)} items; try {tries[-1]['try_number']} finished on {survivor}")
