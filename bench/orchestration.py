"""Orchestration overhead on real executors: one batch (200 items by default) run four ways, against a floor.

- floor: the same backends (espeak-ng synthesis, pocketsphinx alignment, subtitle segmentation and every default
  output format) for the same items in one plain Python process, no Airflow, no S3 (files on local disk);
- LocalExecutor on Postgres, parallelism 2, and CeleryExecutor with two workers (one task each) on Postgres + Redis:
  the real scheduler, dag-processor and api-server (tests/airflow_stack.py), triggered over REST, local S3;
- ``dag.test`` on SQLite (one process, one task at a time), kept as a secondary line.

For each run: wall time (the DAG run's start to end) and its ratio to the floor, the scheduling gaps (each task
instance's start minus the latest end before it, and the time nothing ran), per-task times from the task
instances' start/end dates over REST, and S3 requests per item (counted in the local S3 server's request log).
Also the DAG file's parse time: median of several fresh processes that import the file after ``airflow.sdk``, as
the dag-processor does, reporting the file's own cost beyond ``airflow.sdk``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "narration_batch.py"
SUBJECTS = ["The council", "A spokesperson", "Dr. Hart", "The museum", "Our reporter", "The station", "The team",
            "A local baker", "The weather service", "Rail operators"]
VERBS = ["announced", "confirmed", "reported", "denied", "welcomed", "questioned", "described", "explained"]
OBJECTS = ["a budget of ${n}.5 million", "{n} new jobs in the area", "a delay of {n} minutes",
           "plans for {n} homes by 2030", "a rise of {n}% since last year", "the 3rd phase of the project",
           "a meeting at 10:30 on Tuesday", "{n},000 visitors over the weekend"]
VOICE_TEXT = "This is the narrator's reference voice."
S3_REQUEST = re.compile(r'"\S*(GET|PUT|POST|HEAD|DELETE) ')
WORKER_TASKS = ("synthesize", "align")


def sentences(count: int) -> list[str]:
    out = []
    for n in range(count):
        subject = SUBJECTS[n % len(SUBJECTS)]
        verb = VERBS[(n // len(SUBJECTS)) % len(VERBS)]
        obj = OBJECTS[(n * 7) % len(OBJECTS)].format(n=n % 47 + 2)
        out.append(f"{subject} {verb} {obj}, according to item {n + 1}.")
    return out


# -- the floor ------------------------------------------------------------------------------------------------

def floor(items: int, out_dir: Path) -> dict:
    """The batch's backend work in this process: one model load each, then every item end to end on local disk."""
    from narration import audio as audio_io
    from narration.align.pocketsphinx import PocketsphinxAligner
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.subtitles.formats import FORMATS
    from narration.subtitles.formats.base import SubtitleDocument
    from narration.subtitles.profile import get_profile
    from narration.subtitles.segment import segment_cues
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer

    settings = Settings()
    profile = get_profile()
    voice = Voice("narrator", "en", VOICE_TEXT)
    started = time.perf_counter()
    synth, aligner = EspeakSynthesizer(settings), PocketsphinxAligner(settings)
    synth.load()
    aligner.load()
    loaded = time.perf_counter()
    for n, text in enumerate(sentences(items)):
        item_dir = out_dir / f"b{n:04d}"
        item_dir.mkdir(parents=True, exist_ok=True)
        tokens = normalize_script(text)
        spoken = synth.synthesize(tokens, voice)
        wav = item_dir / "audio.wav"
        wav.write_bytes(audio_io.to_wav_bytes(spoken.audio, spoken.sample_rate))
        samples, rate = audio_io.from_wav_bytes(wav.read_bytes())
        words = aligner.align(samples, rate, tokens, "en")
        cues = segment_cues(words, profile)
        document = SubtitleDocument(cues=cues, words=words, language="en", profile=profile, metadata={
            "item_id": f"b{n:04d}", "method": aligner.name, "language": "en", "model": aligner.model,
            "synthesizer": synth.name, "profile": profile.name})
        for fmt in FORMATS.values():  # every format the DAG writes by default
            (item_dir / fmt.file_name).write_text(fmt.write(document))
    aligner.close()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "load_s": loaded - started, "per_item_s": (wall - (loaded - started)) / items}


def floor_in_fresh_process(items: int, out_dir: Path) -> dict:
    """The floor in a new interpreter, so each run pays the same cold imports and model loads."""
    code = ("import json, sys; from pathlib import Path; from bench.orchestration import floor; "
            "print(json.dumps(floor(int(sys.argv[1]), Path(sys.argv[2]))))")
    done = subprocess.run([sys.executable, "-c", code, str(items), str(out_dir)], cwd=REPO, capture_output=True,
                          text=True, timeout=3600, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- a batch in the local S3 server ---------------------------------------------------------------------------

def seed(storage, items: int) -> None:
    from narration.audio import to_wav_bytes
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer
    from narration.voices import upload_voice

    storage.ensure_bucket()
    synth = EspeakSynthesizer(Settings())
    synth.load()
    ref = synth.synthesize(normalize_script(VOICE_TEXT), Voice("narrator", "en", VOICE_TEXT))
    upload_voice(storage, "narrator", to_wav_bytes(ref.audio, ref.sample_rate), VOICE_TEXT, replace=True)
    manifest = "\n".join(json.dumps({"id": f"b{n:04d}", "text": t}) for n, t in enumerate(sentences(items)))
    storage.put_text("incoming/bench.jsonl", manifest)


def s3_requests(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if S3_REQUEST.search(line))


def check_outputs(storage, items: int) -> str:
    """The batch's summary counts: every item must be done."""
    (batch_id,) = {key.split("/")[1] for key in storage.list_keys("batches/")}
    from narration.layout import BatchLayout

    by_status = storage.get_json(BatchLayout(batch_id).summary)["by_status"]
    return "ok" if by_status == {"done": items} else f"MISMATCH {by_status}"


# -- parse time -----------------------------------------------------------------------------------------------

PARSE_PROBE = """
import importlib.util, json, sys, time
started = time.perf_counter()
import airflow.sdk
sdk_done = time.perf_counter()
spec = importlib.util.spec_from_file_location("unusual_prefix_narration_batch", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print(json.dumps({"sdk_s": sdk_done - started, "file_s": time.perf_counter() - sdk_done}))
"""


def parse_times(env: dict[str, str], repeats: int) -> dict:
    """Median of fresh-process parses of the DAG file: airflow.sdk's import, then the file's own cost."""
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(DAG_FILE)], env=env, capture_output=True,
                              text=True, timeout=300, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"repeats": repeats, "sdk_s": statistics.median(r["sdk_s"] for r in runs),
            "file_s": statistics.median(r["file_s"] for r in runs),
            "file_s_min": min(r["file_s"] for r in runs), "file_s_max": max(r["file_s"] for r in runs)}


# -- real executors -------------------------------------------------------------------------------------------

def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def timeline(run: dict, tis: list[dict]) -> dict:
    """Task instances in start order with the gap before each, the idle time, and per-task totals."""
    run_start, run_end = _when(run["start_date"]), _when(run["end_date"])
    ran = sorted((ti for ti in tis if ti["state"] != "skipped" and ti["start_date"] and ti["end_date"]),
                 key=lambda ti: ti["start_date"])
    rows, busy_until, idle = [], run_start, 0.0
    for ti in ran:
        start, end = _when(ti["start_date"]), _when(ti["end_date"])
        ended_before = [_when(o["end_date"]) for o in ran if o is not ti and _when(o["end_date"]) <= start]
        gap = (start - max(ended_before or [run_start])).total_seconds()
        if start > busy_until:
            idle += (start - busy_until).total_seconds()
        busy_until = max(busy_until, end)
        rows.append({"task": ti["task_id"].rsplit(".", 1)[-1],  # without a task group's id
                     "map_index": ti["map_index"], "host": ti.get("hostname") or "",
                     "start_s": (start - run_start).total_seconds(), "duration_s": (end - start).total_seconds(),
                     "gap_s": gap, "try": ti["try_number"]})
    idle += max(0.0, (run_end - busy_until).total_seconds())
    tasks: dict[str, dict] = {}
    for row in rows:
        task = tasks.setdefault(row["task"], {"instances": 0, "seconds": 0.0})
        task["instances"] += 1
        task["seconds"] += row["duration_s"]
    gaps = [row["gap_s"] for row in rows]
    return {"rows": rows, "tasks": tasks, "idle_s": idle, "gap_median_s": statistics.median(gaps) if gaps else 0.0,
            "gap_max_s": max(gaps) if gaps else 0.0}


def real_executor(name: str, items: int, chunk_size: int, work: Path, parse_repeats: int, **stack_options) -> dict:
    from narration.dev.local_s3 import LocalS3Server
    from narration.settings import Settings
    from narration.storage import Storage
    from tests.airflow_stack import AirflowStack

    log_dir = work / name
    log_dir.mkdir(parents=True)
    s3_log = log_dir / "s3.log"
    server = LocalS3Server(log_path=str(s3_log)).start()
    try:
        saved = dict(os.environ)
        server.apply_env()
        try:
            storage = Storage.from_settings(Settings())
            seed(storage, items)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        (log_dir / "home").mkdir()
        with AirflowStack(log_dir / "home", server.env(), log_dir, **stack_options) as stack:
            stack.wait_for_workers()
            stack.wait_for_dag()
            parse = parse_times(stack.env, parse_repeats) if parse_repeats else None
            before = s3_requests(s3_log)
            run_id = stack.trigger({"chunk_size": chunk_size})["dag_run_id"]
            state = stack.wait_for_run(run_id, 3600)
            requests_made = s3_requests(s3_log) - before
            run = stack.dag_run(run_id)
            tis = stack.task_instances(run_id)
        wall = (_when(run["end_date"]) - _when(run["start_date"])).total_seconds()
        outputs = check_outputs(storage, items)
    finally:
        server.stop()
    return {"name": name, "state": state, "wall_s": wall, "s3_requests": requests_made, "outputs": outputs,
            "parse": parse, **timeline(run, tis)}


# -- dag.test (secondary) -------------------------------------------------------------------------------------

def dag_test(items: int, chunk_size: int, work: Path) -> dict:
    from narration.dev.local_s3 import LocalS3Server
    from narration.settings import Settings
    from narration.storage import Storage

    home = work / "dag-test-home"
    home.mkdir()
    os.environ.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                       "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "NARRATION_RUNNER": "local",
                       "NARRATION_BATCH_DEADLINE_H": "0"})  # dag.test cannot run a DAG with a deadline alert
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "operators.pools"], check=True, capture_output=True)  # the setup step
    s3_log = work / "dag-test-s3.log"
    server = LocalS3Server(log_path=str(s3_log)).start()
    try:
        server.apply_env()
        storage = Storage.from_settings(Settings())
        seed(storage, items)
        from tests.dag_runs import load_dag

        dag = load_dag()
        before = s3_requests(s3_log)
        with output_to(work / "dag-test.log"):  # dag.test logs every task to this process's stdout
            started = time.perf_counter()
            dag_run = dag.test(run_conf={"chunk_size": chunk_size})
            wall = time.perf_counter() - started
        requests_made = s3_requests(s3_log) - before
        outputs = check_outputs(storage, items)
    finally:
        server.stop()
    return {"name": "dag.test (SQLite)", "state": str(dag_run.state), "wall_s": wall, "s3_requests": requests_made,
            "outputs": outputs}


@contextlib.contextmanager
def output_to(path: Path):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


# -- report ---------------------------------------------------------------------------------------------------

def loaded(measure, *args, **kwargs) -> dict:
    """Run one measurement and record the machine's 1-minute load average before and after it."""
    before = os.getloadavg()[0]
    figures = measure(*args, **kwargs)
    return {**figures, "load": (before, os.getloadavg()[0])}


def print_figures(items: int, chunk_size: int, floors: list[dict], floor_figures: dict, runs: list[dict],
                  secondary: dict | None) -> None:
    chunks = -(-items // chunk_size)
    base = floor_figures["wall_s"]
    print(f"orchestration: {items} items, chunk size {chunk_size} -> {chunks} chunks; {os.cpu_count()} CPUs")
    print(f"floor (one process, no Airflow, no S3): {base:.1f} s (model loads {floor_figures['load_s']:.1f} s, "
          f"{floor_figures['per_item_s']:.3f} s per item); the better of a run first and last: "
          + ", ".join(f"{f['wall_s']:.1f} s (load {f['load'][0]:.1f} -> {f['load'][1]:.1f})" for f in floors))
    print(f"{'run':<38} {'state':>8} {'wall s':>8} {'x floor':>8} {'per item s':>10} {'over floor/item':>15} "
          f"{'idle s':>7} {'gap med':>8} {'gap max':>8} {'S3 req/item':>11}")
    for run in runs:
        print(f"{run['name']:<38} {run['state']:>8} {run['wall_s']:>8.1f} {run['wall_s'] / base:>8.2f} "
              f"{run['wall_s'] / items:>10.3f} {(run['wall_s'] - base) / items:>15.3f} {run['idle_s']:>7.1f} "
              f"{run['gap_median_s']:>8.1f} {run['gap_max_s']:>8.1f} {run['s3_requests'] / items:>11.1f}")
    if secondary:
        print(f"{secondary['name']:<38} {secondary['state'].split('.')[-1]:>8} {secondary['wall_s']:>8.1f} "
              f"{secondary['wall_s'] / base:>8.2f} {secondary['wall_s'] / items:>10.3f} "
              f"{(secondary['wall_s'] - base) / items:>15.3f} {'':>7} {'':>8} {'':>8} "
              f"{secondary['s3_requests'] / items:>11.1f}   (secondary)")
    for run in [*runs, *([secondary] if secondary else [])]:
        print(f"outputs of {run['name']}: {run['outputs']}; 1-minute load average {run['load'][0]:.1f} before, "
              f"{run['load'][1]:.1f} after")
    parse = next((run["parse"] for run in runs if run.get("parse")), None)
    if parse:
        print(f"DAG file parse (median of {parse['repeats']} fresh processes): import airflow.sdk "
              f"{parse['sdk_s']:.2f} s, then the file's own cost {parse['file_s']:.2f} s "
              f"(min {parse['file_s_min']:.2f}, max {parse['file_s_max']:.2f}; goal < 0.5 s)")
    for run in runs:
        print(f"\n{run['name']}: task instances in start order (start offset from the run's start, duration, and "
              "the gap since the latest end before it)")
        print(f"  {'task':<18} {'map':>4} {'try':>3} {'host':<12} {'start s':>8} {'dur s':>7} {'gap s':>6}")
        for row in run["rows"]:
            print(f"  {row['task']:<18} {row['map_index']:>4} {row['try']:>3} {row['host'][:12]:<12} "
                  f"{row['start_s']:>8.1f} {row['duration_s']:>7.1f} {row['gap_s']:>6.1f}")
        print("  per task (instances x summed start-to-end seconds):")
        for task, figures in sorted(run["tasks"].items(), key=lambda kv: -kv[1]["seconds"]):
            print(f"    {task:<18} {figures['instances']:>3} x {figures['seconds']:>7.1f} s")
        overlap = pipelined(run["rows"])
        print(f"  align started before the last synthesize ended: {overlap}")


def pipelined(rows: list[dict]) -> str:
    synth_ends = [row["start_s"] + row["duration_s"] for row in rows if row["task"] == "synthesize"]
    align_starts = [row["start_s"] for row in rows if row["task"] == "align"]
    if not synth_ends or not align_starts:
        return "n/a"
    early = sum(1 for start in align_starts if start < max(synth_ends))
    return f"{early} of {len(align_starts)} align instances"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--parse-repeats", type=int, default=5)
    parser.add_argument("--skip", action="append", default=[], choices=["local", "celery", "dag-test"],
                        help="leave a run out (repeatable)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="narration-bench-orchestration-"))
    try:
        # The floor runs first and last: on a shared machine the load moves, and the floor is the best it did.
        floors = [loaded(floor_in_fresh_process, args.items, work / "floor-first")]
        runs = []
        if "local" not in args.skip:
            runs.append(loaded(real_executor, "LocalExecutor, Postgres, parallelism 2", args.items, args.chunk_size,
                               work, args.parse_repeats, database="postgres", executor="local", parallelism=2))
        if "celery" not in args.skip:
            runs.append(loaded(real_executor, "Celery, 2 workers, Postgres + Redis", args.items, args.chunk_size,
                               work, 0 if runs else args.parse_repeats, database="postgres", executor="celery",
                               celery_workers=2))
        secondary = None if "dag-test" in args.skip else loaded(dag_test, args.items, args.chunk_size, work)
        floors.append(loaded(floor_in_fresh_process, args.items, work / "floor-last"))
        floor_figures = min(floors, key=lambda f: f["wall_s"])
        print_figures(args.items, args.chunk_size, floors, floor_figures, runs, secondary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"floor": floor_figures, "runs": runs, "secondary": secondary}


if __name__ == "__main__":
    main()
