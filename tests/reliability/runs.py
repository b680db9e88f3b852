"""Running the narration DAG for the reliability suites: several runs in one Airflow process
(``tests/reliability/dag_runner.py``), each with its environment, its Params and S3 changes made before it, and
what each run left: state, task tries and states, returned XComs, wall time and the runs' log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from narration.layout import BatchLayout
from narration.settings import Settings
from narration.storage import Storage
from narration.voices import upload_voice
from tests.reliability.dag_runner import MARK

REPO = Path(__file__).resolve().parents[2]
NARRATOR_TEXT = "This is the narrator's reference voice for the tests."
ITEM_FILES = {"audio.wav", "synthesis.json", "timing-pocketsphinx.json", "subtitles.srt", "subtitles.vtt",
              "subtitles.ass", "subtitles.ttml", "words.json", "words.csv", "chapters.vtt", "narration.wav",
              "delivery.json", "result.json"}
# Google fallback off (no endpoint here) and no chaos rules unless a run sets them.
NOT_INHERITED = ("NARRATION_GOOGLE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
                 "NARRATION_FAULTS")


@dataclass
class DagRunRecord:
    name: str
    state: str
    run_id: str
    began: datetime
    ended: datetime
    log: str
    xcoms: dict[tuple[str, int], object] = field(default_factory=dict)
    tries: dict[tuple[str, int], int] = field(default_factory=dict)
    states: dict[tuple[str, int], str] = field(default_factory=dict)


def run_dags(runs: list[dict], log_dir: Path, timeout_s: float = 900) -> dict[str, DagRunRecord]:
    """All runs in one Airflow process (tests/reliability/dag_runner.py); its output is the runs' task log."""
    plan = log_dir / "plan.json"
    plan.write_text(json.dumps(runs))
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "include"), env.get("PYTHONPATH", "")])
    log_path = log_dir / "dag-runs.log"
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, "-m", "tests.reliability.dag_runner", str(plan), "--retry-delay-s",
                               "2"], check=False, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                              timeout=timeout_s)
    text = log_path.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return parse_runs(text, [r["name"] for r in runs])


def parse_runs(text: str, names: list[str]) -> dict[str, DagRunRecord]:
    """The runs' records from the runner's output."""
    records: dict[str, DagRunRecord] = {}
    for chunk in text.split(f"{MARK} begin ")[1:]:
        header, _, body = chunk.partition("\n")
        name, began = header.split(" ", 1)
        log_part, _, tail = body.partition(f"{MARK} end {name} ")
        result = json.loads(tail.splitlines()[0])
        record = DagRunRecord(name=name, state=result["state"], run_id=result["run_id"],
                              began=datetime.fromisoformat(began), ended=datetime.fromisoformat(result["ended"]),
                              log=log_part)
        for ti in result["task_instances"]:
            key = (ti["task_id"], ti["map_index"])
            record.xcoms[key], record.tries[key], record.states[key] = ti["xcom"], ti["try_number"], ti["state"]
        records[name] = record
    assert sorted(records) == sorted(names), text[-3000:]
    return records


def item_files(storage: Storage, batch_id: str) -> dict[str, set[str]]:
    root = BatchLayout(batch_id).root + "items/"
    out: dict[str, set[str]] = {}
    for key in storage.list_keys(root):
        item_id, name = key.removeprefix(root).split("/", 1)
        out.setdefault(item_id, set()).add(name)
    return out


def new_bucket(name: str, narrator_wav: bytes) -> Storage:
    storage = Storage.from_settings(Settings(bucket=f"{name}-{uuid.uuid4().hex[:8]}"))
    storage.ensure_bucket()
    upload_voice(storage, "narrator", narrator_wav, NARRATOR_TEXT)
    return storage




def wall_s(record: DagRunRecord) -> float:
    return (record.ended - record.began).total_seconds()
