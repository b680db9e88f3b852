"""Long-form benchmark: one public-domain text narrated as one item on the embedded default, at three lengths.

The text is the King James Version of Genesis, from Debian's ``bible-kjv`` package (public domain; its chapters
become the programme's chapters). For each length (default 1,000, 3,000 and 10,000 words) the benchmark plans a
one-item batch on a local S3 server and runs the three worker steps as the worker command line, one process each,
as a local runner does. It prints:

- wall time per step and in all, seconds per 1,000 words, and the growth against the shortest text;
- each step's peak resident memory (the worker process's maximum RSS);
- word-onset error of the aligned track against espeak-ng's exact onsets, for the first, middle and last 500
  words (no drift: the last 500 no worse than the first);
- the share of cues that break the subtitle profile, judged by ``bench.rules`` (the subtitle benchmark's checker);
- a position control: the longest programme once more with its opening chapter (the first 500 words and the rest
  of their verses) repeated as its last, so the same words are timed at the start and at the end of the programme
  and their onset errors are compared word for word. The natural first and last 500 words are different texts;
  this compares position alone.

Run ``python -m bench.longform [--words 1000,3000,10000]`` from the repo root (PYTHONPATH=include:.).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BOOK = "Genesis"
BIBLE_VERSES = f"{BOOK}1:1-50:26"
WINDOW_WORDS = 500
VOICE_TEXT = "This is the narrator's reference voice, recorded for the evening bulletin."
# espeak-ng's pitch flutter keeps its phase from one call to the next, so with it the same sentence comes out a few
# samples different at the end of a programme than at its start; a flutter-free variant speaks it the same wherever
# it falls, which is what the position control needs to compare position alone.
ESPEAK_VOICE = "en-us+michel"


@dataclass
class Chapter:
    title: str
    verses: list[str] = field(default_factory=list)


def kjv_chapters(bible: str | None = None) -> list[Chapter]:
    """Genesis as chapters of verse texts, read with Debian's ``bible`` reader (verse numbers dropped)."""
    exe = bible or shutil.which("bible")
    if not exe:
        raise SystemExit("bench.longform needs Debian's bible-kjv package (make system-packages installs it)")
    out = subprocess.run([exe, "-l1000", BIBLE_VERSES], check=True, capture_output=True, text=True).stdout
    chapters: list[Chapter] = []
    for line in out.splitlines():
        if not line.strip():
            continue
        if re.fullmatch(rf"{BOOK} \d+", line.strip()):
            chapters.append(Chapter(line.strip()))
        elif (verse := re.match(r"\s*\d+ (.*)", line)) and chapters:
            chapters[-1].verses.append(verse.group(1).strip())
        elif chapters and chapters[-1].verses:
            chapters[-1].verses[-1] += " " + line.strip()
    return chapters


def programme_text(chapters: list[Chapter], words: int) -> tuple[str, int]:
    """The first ``words`` words (whole verses) as one long-form text: a heading line per chapter and its verses as
    one paragraph, blank lines between; returns the text and its word count."""
    blocks, count = [], 0
    for chapter in chapters:
        taken = []
        for verse in chapter.verses:
            if count >= words:
                break
            taken.append(verse)
            count += len(verse.split())
        if not taken:
            break
        blocks.append(f"# {chapter.title}\n\n{' '.join(taken)}")
        count += len(chapter.title.split())
    return "\n\n".join(blocks), count


def run_step(args: list[str], env: dict[str, str]) -> dict:
    """Run one worker step as its own process; its wall time, peak RSS and parsed result line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "narration", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    lines = [line for line in stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0:
        raise RuntimeError(f"narration {' '.join(args)} exited {proc.returncode}: {result}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "result": result}


def onset_errors(reference, timed, first: int, count: int) -> dict:
    """Mean / median / p95 absolute onset error (ms) over word indexes first..first+count, untimed counted apart."""
    truth = {w["index"]: w["start_ms"] for w in reference if w.get("start_ms") is not None}
    errors, untimed = [], 0
    for word in timed:
        if not first <= word["index"] < first + count or word["index"] not in truth:
            continue
        if word.get("start_ms") is None:
            untimed += 1
        else:
            errors.append(abs(word["start_ms"] - truth[word["index"]]))
    e = np.asarray(errors, dtype=float)
    if not len(e):
        return {"words": 0, "untimed": untimed}
    return {"words": len(e), "untimed": untimed, "mean_ms": round(float(e.mean()), 1),
            "median_ms": round(float(np.median(e)), 1), "p95_ms": round(float(np.percentile(e, 95)), 1)}


def drift(reference, timed) -> dict:
    """Whether error grows along the programme: the least-squares slope of each word's absolute onset error
    against its position (ms per 1,000 words), and the mean error of every 500-word window in order."""
    truth = {w["index"]: w["start_ms"] for w in reference if w.get("start_ms") is not None}
    pairs = [(w["index"], abs(w["start_ms"] - truth[w["index"]])) for w in timed
             if w.get("start_ms") is not None and w["index"] in truth]
    if len(pairs) < 2:
        return {"slope_ms_per_1000_words": None, "window_means_ms": []}
    position, error = (np.asarray(values, dtype=float) for values in zip(*pairs))
    slope = float(np.polyfit(position, error, 1)[0]) * 1000
    windows = [round(float(error[(position >= start) & (position < start + WINDOW_WORDS)].mean()), 1)
               for start in range(0, int(position.max()) + 1, WINDOW_WORDS)
               if ((position >= start) & (position < start + WINDOW_WORDS)).any()]
    return {"slope_ms_per_1000_words": round(slope, 2), "window_means_ms": windows}


def position_control(reference, timed, repeated: int) -> dict:
    """The same ``repeated`` tokens timed at the start and again at the end of one programme: their onset errors
    side by side (mean / median / p95 ms) and the word-for-word difference (end minus start)."""
    truth = {w["index"]: w["start_ms"] for w in reference if w.get("start_ms") is not None}
    total = len(timed)
    pairs, mismatched, untimed = [], 0, 0
    for i in range(repeated):
        head, tail = timed[i], timed[total - repeated + i]
        if head["spoken"] != tail["spoken"]:
            mismatched += 1
            continue
        if None in (head.get("start_ms"), tail.get("start_ms")) or not {head["index"], tail["index"]} <= set(truth):
            untimed += 1
            continue
        pairs.append((abs(head["start_ms"] - truth[head["index"]]), abs(tail["start_ms"] - truth[tail["index"]])))
    if not pairs:
        return {"words": 0, "mismatched": mismatched, "untimed": untimed}
    start, end = (np.asarray(values, dtype=float) for values in zip(*pairs))
    diff = end - start

    def summary(e):
        return {"mean_ms": round(float(e.mean()), 1), "median_ms": round(float(np.median(e)), 1),
                "p95_ms": round(float(np.percentile(e, 95)), 1)}

    return {"words": len(pairs), "mismatched": mismatched, "untimed": untimed, "start": summary(start),
            "end": summary(end), "mean_difference_ms": round(float(diff.mean()), 2),
            "max_abs_difference_ms": round(float(np.abs(diff).max()), 1),
            "identical_share": round(float((diff == 0).mean()), 3)}


def narrate(storage, settings, env: dict[str, str], text: str, words: int, name: str | None = None) -> dict:
    """Plan a one-item batch with ``text`` and run synthesize, align and render; the step figures and outputs."""
    from narration.layout import INCOMING, BatchLayout
    from narration.plan import BatchOptions, plan_batch

    batch_id = f"longform-{name or words}"
    key = f"{INCOMING}{batch_id}.jsonl"
    storage.put_bytes(key, (json.dumps({"id": "programme", "text": text, "voice": "narrator"}) + "\n").encode())
    plan = plan_batch(storage, settings, batch_id, [key], BatchOptions(formats=["srt", "vtt", "json"]),
                      voices={"narrator"})
    if plan.quarantined or len(plan.chunks) != 1:
        raise RuntimeError(f"planning did not make one item in one chunk: {plan.model_dump_json()[:2000]}")
    chunk_key = plan.chunks[0].key
    steps = {}
    for step in ("synthesize", "align", "render"):
        steps[step] = run_step([step, "--chunk", chunk_key], env)
        print(f"  {words} words: {step} {steps[step]['wall_s']:.1f} s, peak RSS {steps[step]['peak_rss_mb']:.0f} MB",
              flush=True)
    layout = BatchLayout(batch_id)
    synthesis = storage.get_json(layout.synthesis("programme"))
    timing = storage.get_json(layout.timing("programme", settings.aligner))
    words_doc = storage.get_json_or_none(layout.subtitle("programme", "json")) or {"cues": []}  # none: not timed
    return {"steps": steps, "synthesis": synthesis, "timing": timing, "words_doc": words_doc}


def figures(words: int, run: dict) -> dict:
    from bench.rules import cue_violations
    from narration.schema import Cue

    reference = run["synthesis"].get("reference_words") or []
    timed = run["timing"]["words"]
    total = len(timed)
    windows = {"first": 0, "middle": max(0, total // 2 - WINDOW_WORDS // 2), "last": max(0, total - WINDOW_WORDS)}
    cues = [Cue.model_validate(c) for c in run["words_doc"]["cues"]]
    judged = cue_violations(cues)
    broken = sum(1 for rules in judged if rules)
    by_rule = Counter(rule for rules in judged for rule in rules)
    return {
        "words": words,
        "tokens": total,
        "audio_min": round((run["synthesis"].get("audio_seconds") or 0) / 60, 1),
        "segments": len(run["synthesis"].get("segments") or []),
        "chapters": len(run["words_doc"].get("chapters") or []),
        "wall_s": {step: round(s["wall_s"], 1) for step, s in run["steps"].items()},
        "total_s": round(sum(s["wall_s"] for s in run["steps"].values()), 1),
        "peak_rss_mb": {step: round(s["peak_rss_mb"]) for step, s in run["steps"].items()},
        "timing_method": run["timing"]["method"],
        "timing_status": run["timing"]["status"],
        "onset": {name: onset_errors(reference, timed, first, WINDOW_WORDS) for name, first in windows.items()},
        "drift": drift(reference, timed),
        "cues": len(cues),
        "cues_breaking_profile": broken,
        "cue_break_share": round(broken / len(cues), 3) if cues else None,
        "cue_rules_broken": dict(by_rule.most_common()),
    }


def print_table(rows: list[dict]) -> None:
    base = rows[0]
    print(f"\nLong-form narration, KJV {BOOK}, one item, espeak + pocketsphinx on the embedded default "
          f"(local S3, worker processes; host: {os.uname().nodename}, {os.cpu_count()} CPUs)")
    print(f"{'words':>6} {'audio':>7} {'segs':>5} {'synth s':>8} {'align s':>8} {'render s':>8} {'total s':>8} "
          f"{'s/1k w':>7} {'growth':>7} {'marginal':>9} {'RSS MB s/a/r':>15}")
    previous = None
    for row in rows:
        per_k = row["total_s"] / row["words"] * 1000
        growth = (row["total_s"] / base["total_s"]) / (row["words"] / base["words"])
        marginal = (f"{(row['total_s'] - previous['total_s']) / (row['words'] - previous['words']) * 1000:>9.1f}"
                    if previous else f"{'-':>9}")
        previous = row
        rss = "/".join(str(row["peak_rss_mb"][s]) for s in ("synthesize", "align", "render"))
        print(f"{row['words']:>6} {row['audio_min']:>5.1f}mn {row['segments']:>5} {row['wall_s']['synthesize']:>8.1f} "
              f"{row['wall_s']['align']:>8.1f} {row['wall_s']['render']:>8.1f} {row['total_s']:>8.1f} "
              f"{per_k:>7.1f} {growth:>6.2f}x {marginal} {rss:>15}")
    print("growth = (time ratio) / (word ratio) against the shortest text (1.00x: proportional); marginal = s per "
          "1,000 words added since the previous length (constant: linear; the start-up cost drops out)")
    print(f"\nword-onset error against espeak's exact onsets, {WINDOW_WORDS}-word windows (mean / median / p95 ms, "
          "untimed)")
    for row in rows:
        cells = []
        for name in ("first", "middle", "last"):
            o = row["onset"][name]
            cells.append(f"{name} {o.get('mean_ms', '-')}/{o.get('median_ms', '-')}/{o.get('p95_ms', '-')} "
                         f"({o['untimed']} untimed)")
        print(f"{row['words']:>6}: {'; '.join(cells)}   [{row['timing_method']}, {row['timing_status']}]")
    print("\ndrift: slope of onset error against word position, and the mean error of each 500-word window")
    for row in rows:
        d = row["drift"]
        print(f"{row['words']:>6}: {d['slope_ms_per_1000_words']} ms per 1,000 words; windows "
              f"{' '.join(str(m) for m in d['window_means_ms'])}")
    print("\ncues breaking the subtitle profile (bench.rules)")
    for row in rows:
        print(f"{row['words']:>6}: {row['cues_breaking_profile']} of {row['cues']} cues "
              f"({100 * (row['cue_break_share'] or 0):.1f} %), chapters {row['chapters']}; by rule: "
              + ", ".join(f"{rule} {n}" for rule, n in row["cue_rules_broken"].items()))


def print_control(words: int, repeated_words: int, control: dict) -> None:
    print(f"\nposition control: the {words}-word programme with its opening chapter's first {repeated_words} words "
          "repeated as its last chapter; the same tokens' onset error at the start and at the end (mean / median / "
          "p95 ms)")
    if not control["words"]:
        print(f"  no pair timed at both ends ({control['mismatched']} mismatched, {control['untimed']} untimed)")
        return
    s, e = control["start"], control["end"]
    print(f"  {control['words']} tokens: start {s['mean_ms']}/{s['median_ms']}/{s['p95_ms']}, end "
          f"{e['mean_ms']}/{e['median_ms']}/{e['p95_ms']}; end minus start {control['mean_difference_ms']} ms on "
          f"average, at most {control['max_abs_difference_ms']} ms for one word; "
          f"{100 * control['identical_share']:.1f} % of words identical "
          f"({control['mismatched']} mismatched, {control['untimed']} untimed)")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", default="1000,3000,10000", help="comma-separated text lengths")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-control", action="store_true", help="skip the position control run")
    args = parser.parse_args(argv)
    lengths = sorted(int(w) for w in args.words.split(","))

    from narration.audio import to_wav_bytes
    from narration.dev.local_s3 import LocalS3Server
    from narration.normalize import normalize_script
    from narration.settings import Settings
    from narration.storage import Storage
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer
    from narration.voices import upload_voice

    chapters = kjv_chapters()
    rows = []
    with LocalS3Server() as server, tempfile.TemporaryDirectory(prefix="narration-longform-") as work:
        server.apply_env("bench-longform")
        os.environ.update({"NARRATION_SYNTHESIZER": "espeak", "NARRATION_ALIGNER": "pocketsphinx",
                           "NARRATION_MODEL_DIR": os.environ.get("NARRATION_MODEL_DIR", work)})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(["include", os.environ.get("PYTHONPATH", "")])}
        settings = Settings()
        storage = Storage.from_settings(settings)
        storage.ensure_bucket()
        speaker = EspeakSynthesizer(settings)
        speaker.load()
        speech = speaker.synthesize(normalize_script(VOICE_TEXT), Voice("narrator", "en", VOICE_TEXT,
                                                                         metadata={"espeak_voice": ESPEAK_VOICE}))
        upload_voice(storage, "narrator", to_wav_bytes(speech.audio, speech.sample_rate), VOICE_TEXT,
                     espeak_voice=ESPEAK_VOICE, replace=True)
        for words in lengths:
            text, count = programme_text(chapters, words)
            print(f"narrating {count} words ({len(text)} characters) as one item ...", flush=True)
            rows.append(figures(count, narrate(storage, settings, env, text, words)))
        control = None
        if not args.no_control:
            opening, opening_words = programme_text(chapters, WINDOW_WORDS)
            repeated = len(normalize_script(opening))
            print(f"position control: {count} words with the first {opening_words} repeated at the end ...",
                  flush=True)
            run = narrate(storage, settings, env, f"{text}\n\n{opening}", words, name=f"{words}-control")
            control = position_control(run["synthesis"].get("reference_words") or [], run["timing"]["words"],
                                       repeated)
            control.update(programme_words=count, repeated_words=opening_words)
    print_table(rows)
    if control:
        print_control(count, opening_words, control)
    if args.json:
        args.json.write_text(json.dumps({"lengths": rows, "position_control": control}, indent=2))
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(benchmark driver's own peak RSS: {peak_self:.0f} MB)")
    return rows


if __name__ == "__main__":
    main()
