"""Subtitle rule benchmark: our segmentation against stable-ts's default regrouping and whisperX's subtitle writer.

Run ``PYTHONPATH=include:. .venv-heavy/bin/python -m bench.subtitles`` from the repo root. Every system gets the
same word timings (the demo batch spoken by espeak-ng, TIMIT's labelled words) and every SRT it writes is judged by
bench/rules.py; a peer that is not importable is named and skipped.
"""

from __future__ import annotations

import argparse
import io
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path

from bench.alignment import TIMIT_SAMPLE_RATE, timit_dir
from bench.rules import RULES, RuleTally, cue_violations, cues_from_srt, cues_from_ttml
from narration.longform import is_long
from narration.normalize import normalize_script
from narration.schema import Cue, WordTiming
from narration.subtitles import segment_cues, to_ass, to_srt, to_ttml, to_vtt
from narration.subtitles.profile import DEFAULT_PROFILE, get_profile
from narration.subtitles.segment import _evaluate, effective_spans

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_MANIFEST = REPO_ROOT / "samples" / "evening-bulletin.jsonl"
DEMO_VOICE = "narrator"  # the one voice `make demo` seeds; lines naming another are quarantined there
DEMO_ESPEAK_VOICE = "en-us"
PROFILE = DEFAULT_PROFILE
WHISPERX_OPTIONS = {"max_line_width": 42, "max_line_count": 2, "highlight_words": False}
# Silences put between TIMIT sentences read as one programme: below, between and above the pause thresholds
# (ours 0.5 s / 1.5 s, stable-ts 0.5 s, whisperX 3 s).
PROGRAMME_PAUSES_MS = (300, 700, 1200, 2000, 3500)
# Per rule the share of cues breaking it; "any": cues breaking at least one; "words": words shown in those.
TABLE_COLUMNS = (*RULES, "any", "words")


@dataclass
class Programme:
    """One subtitle file's worth of timed words; ``sentences`` are word-index ranges (a peer's input segments)."""

    name: str
    words: list[WordTiming]
    sentences: list[range]


# ----------------------------------------------------------------------------------------------------------
# Word timings


def demo_programmes(manifest: Path = DEMO_MANIFEST) -> list[Programme]:
    """The demo batch's short lines spoken by espeak-ng as `make demo` speaks them, with espeak's exact word times.
    Its long item is left out: `make demo` narrates it in segments, with pauses and chapters, not as one utterance."""
    from narration.manifests import ValidationContext, parse_manifest
    from narration.settings import get_settings
    from narration.synth.base import Voice
    from narration.synth.espeak import EspeakSynthesizer

    settings = get_settings()
    synthesizer = EspeakSynthesizer(settings)
    synthesizer.load()
    voice = Voice(DEMO_VOICE, "en", "", metadata={"espeak_voice": DEMO_ESPEAK_VOICE})
    # The demo's own parser: lines for another voice are quarantined there, the long item is told apart here.
    parsed = parse_manifest(manifest.name, manifest.read_bytes(), ValidationContext(settings=settings,
                                                                                    voices={DEMO_VOICE}))
    programmes = []
    for item in parsed.items:
        if is_long(item, settings):
            continue
        tokens = normalize_script(item.text)
        synthesis = synthesizer.synthesize(tokens, voice, speed=item.speed)
        words = synthesis.reference_words
        programmes.append(Programme(item.item_id, words, [range(len(words))]))
    return programmes


def _bare(text: str) -> str:
    """A prompt token as TIMIT labels it: lowercase, outer punctuation stripped."""
    return text.replace("’", "'").strip(string.punctuation + "“”‘").lower()


def timit_utterance(wrd: Path) -> Programme:
    """One TIMIT utterance: the prompt's tokens (case and punctuation kept) timed by the labelled words.

    A hyphenated prompt token spans the labelled words it was split into; when the prompt and the labels
    disagree, the labels' own lowercase words are used. A phone shared by two words (TIMIT's overlap) is
    given to the second, so every system gets ordered, non-overlapping words.
    """
    labelled: list[tuple[str, int, int]] = []
    for line in wrd.read_text().splitlines():
        if line.strip():
            begin, end, word = line.split()
            start_ms, end_ms = (round(int(sample) * 1000 / TIMIT_SAMPLE_RATE) for sample in (begin, end))
            if labelled and labelled[-1][2] > start_ms:
                labelled[-1] = (labelled[-1][0], labelled[-1][1], max(labelled[-1][1], start_ms))
            labelled.append((word, start_ms, end_ms))
    prompt = wrd.with_suffix(".txt").read_text().split()[2:]
    words: list[WordTiming] = []
    k = 0
    for token in prompt:
        parts = [p for p in _bare(token).split("-") if p]
        if [w for w, _, _ in labelled[k : k + len(parts)]] != parts:
            words = []
            break
        span = labelled[k : k + len(parts)]
        words.append(_word(len(words), token, span[0][1], span[-1][2]))
        k += len(parts)
    if not words or k != len(labelled):
        words = [_word(i, w, start, end) for i, (w, start, end) in enumerate(labelled)]
    return Programme(wrd.stem, words, [range(len(words))])


def _word(index: int, text: str, start_ms: int, end_ms: int) -> WordTiming:
    return WordTiming(
        index=index, text=text, spoken=_bare(text), start_ms=start_ms, end_ms=end_ms, score=1.0, source="timit"
    )


def timit_programmes(utterances: list[Programme]) -> list[Programme]:
    """Each speaker's TIMIT sentences read as one programme, with a cycle of pauses between sentences."""
    by_speaker: dict[str, list[Programme]] = {}
    for utterance in utterances:
        by_speaker.setdefault(utterance.name.split("_")[0], []).append(utterance)
    programmes = []
    pauses = cycle(PROGRAMME_PAUSES_MS)
    for speaker, parts in by_speaker.items():
        words: list[WordTiming] = []
        sentences: list[range] = []
        for part in parts:
            shift = 0 if not words else words[-1].end_ms + next(pauses) - part.words[0].start_ms
            first = len(words)
            for w in part.words:
                words.append(
                    w.model_copy(
                        update={"index": len(words), "start_ms": w.start_ms + shift, "end_ms": w.end_ms + shift}
                    )
                )
            sentences.append(range(first, len(words)))
        programmes.append(Programme(speaker, words, sentences))
    return programmes


# ----------------------------------------------------------------------------------------------------------
# The three systems: timed words in, SRT text out, read back as cues


def ours_srt(programme: Programme) -> str:
    return to_srt(segment_cues(programme.words, PROFILE))


def ours_in(fmt: str) -> Callable[[Programme], list[Cue]]:
    """Our cues written as ``fmt`` and read back by that format's reader (pysubs2; ttconv for TTML)."""
    def write_and_read(programme: Programme) -> list[Cue]:
        cues = segment_cues(programme.words, PROFILE)
        if fmt == "ttml":
            return cues_from_ttml(to_ttml(cues, "en", get_profile(PROFILE)))
        text = {"vtt": lambda: to_vtt(cues), "ass": lambda: to_ass(cues, programme.words)}[fmt]()
        return cues_from_srt(text, fmt)
    return write_and_read


def _segments(programme: Programme, word: Callable[[WordTiming], dict]) -> list[dict]:
    segments = []
    for sentence in programme.sentences:
        words = [programme.words[i] for i in sentence]
        segments.append(
            {
                "start": words[0].start_ms / 1000,
                "end": words[-1].end_ms / 1000,
                "text": " ".join(w.text for w in words),
                "words": [word(w) for w in words],
            }
        )
    return segments


def load_whisperx_writer() -> Callable[[Programme], str]:
    """whisperX's SRT writer with max_line_width 42 and max_line_count 2, fed words as whisperx.align returns them."""
    from whisperx.utils import WriteSRT

    writer = WriteSRT(output_dir=".")

    def whisperx_srt(programme: Programme) -> str:
        def word(w: WordTiming) -> dict:
            return {"word": w.text, "start": w.start_ms / 1000, "end": w.end_ms / 1000, "score": 1.0}

        result = {"segments": _segments(programme, word), "language": "en"}
        out = io.StringIO()
        writer.write_result(result, out, WHISPERX_OPTIONS)
        return out.getvalue()

    return whisperx_srt


def load_stable_ts() -> Callable[[Programme], str]:
    """stable-ts's default regrouping ('da') of a WhisperResult built from the words, written as segment-level SRT."""
    import stable_whisper

    def stable_ts_srt(programme: Programme) -> str:
        def word(w: WordTiming) -> dict:  # Whisper words carry their leading space
            return {"word": " " + w.text, "start": w.start_ms / 1000, "end": w.end_ms / 1000, "probability": 1.0}

        segments = _segments(programme, word)
        for segment in segments:
            segment["text"] = " " + segment["text"]
        result = stable_whisper.WhisperResult({"segments": segments, "language": "en"})
        result.regroup()
        return result.to_srt_vtt(segment_level=True, word_level=False)

    return stable_ts_srt


@dataclass
class System:
    name: str
    version: str
    write_srt: Callable[[Programme], str] | None
    read_cues: Callable[[Programme], list[Cue]] | None = None  # for our other formats: write, then read back

    def cues(self, programme: Programme) -> list[Cue]:
        return self.read_cues(programme) if self.read_cues else cues_from_srt(self.write_srt(programme))


def load_systems() -> tuple[list[System], dict[str, str]]:
    """The systems that can run here (ours first) and, for each peer that cannot, why."""
    from importlib.metadata import PackageNotFoundError, version

    systems = [System("ours", f"segment_cues, profile {PROFILE}", ours_srt)]
    systems += [System(f"ours {fmt}", "the same cues read back", None, ours_in(fmt)) for fmt in ("vtt", "ass", "ttml")]
    missing: dict[str, str] = {}
    peers = (("stable-ts", "stable-ts", load_stable_ts), ("whisperX", "whisperx", load_whisperx_writer))
    for name, package, loader in peers:
        try:
            systems.append(System(name, version(package), loader()))
        except (ImportError, PackageNotFoundError) as error:
            missing[name] = f"{type(error).__name__}: {error}"
    return systems, missing


# ----------------------------------------------------------------------------------------------------------
# What the speech allows


def fewest_broken_cues(words: list[WordTiming]) -> int:
    """The fewest cues breaking a rule of bench.rules over every cut of ``words`` into cues of at most two full
    lines and 7 s of speech (a lone word may exceed them), each cue timed as segment_cues times it: in at its first
    word, out after up to linger_ms of silence and 2 frames before the next cue.

    Cuts may fall anywhere, mid-sentence and across pauses: a floor for that timing, not a style target.
    """
    profile = get_profile(PROFILE)
    ordered = sorted(words, key=lambda w: w.index)
    spans = effective_spans(ordered)
    texts = [w.text for w in ordered]
    starts = [spans[w.index][0] for w in ordered]
    ends = [spans[w.index][1] for w in ordered]
    capacity = profile.max_chars_per_line * profile.max_lines
    n = len(ordered)
    best = [0] + [n] * n
    for j in range(1, n + 1):
        following = [Cue(index=2, start_ms=starts[j], end_ms=ends[j], lines=[texts[j]])] if j < n else []
        for i in range(j - 1, -1, -1):
            if i < j - 1 and (
                len(" ".join(texts[i:j])) > capacity or ends[j - 1] - starts[i] > profile.max_duration_ms
            ):
                break
            candidate = _evaluate(texts, starts, ends, i, j, profile)
            cue = Cue(index=1, start_ms=candidate.start_ms, end_ms=candidate.end_ms, lines=candidate.lines)
            best[j] = min(best[j], best[i] + bool(cue_violations([cue, *following], profile)[0]))
    return best[-1]


# ----------------------------------------------------------------------------------------------------------
# Report


def run_dataset(programmes: list[Programme], systems: list[System]) -> dict[str, RuleTally]:
    """Per system, the rule tally over every programme's SRT as that system writes it."""
    tallies = {}
    for system in systems:
        tally = RuleTally()
        for programme in programmes:
            tally.add(system.cues(programme), programme.name)
        tallies[system.name] = tally
    return tallies


def verdict(rule: str, tallies: dict[str, RuleTally]) -> str:
    ours = tallies["ours"].shares()[rule]
    peers = [t.shares()[rule] for name, t in tallies.items() if not name.startswith("ours")]
    if not peers:
        return "no peer"
    if all(ours < p for p in peers):
        return "lower"
    if ours == 0:
        return "tie at 0"
    return "NOT lower"


def format_table(tallies: dict[str, RuleTally]) -> str:
    header = ("system", "cues", *TABLE_COLUMNS)
    rows = [header]
    for name, tally in tallies.items():
        shares = tally.shares()
        rows.append((name, str(tally.cues), *(f"{100 * shares[r]:.1f}%" for r in TABLE_COLUMNS)))
    rows.append(("ours < both?", "", *(verdict(r, tallies) for r in TABLE_COLUMNS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:-1], "-" * len(lines[0]), lines[-1]])


def format_examples(tally: RuleTally, limit: int) -> str:
    out = []
    for label, cue, rules in tally.examples[:limit]:
        seconds = (cue.end_ms - cue.start_ms) / 1000
        out.append(f"  {label} {cue.start_ms}-{cue.end_ms} ({seconds:.2f} s) {rules}: {' | '.join(cue.lines)}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print our first N cues that break a rule")
    args = parser.parse_args(argv)

    systems, missing = load_systems()
    datasets: dict[str, list[Programme]] = {"demo batch (espeak-ng, per item)": demo_programmes()}
    directory = timit_dir()
    if directory.is_dir():
        utterances = [timit_utterance(wrd) for wrd in sorted(directory.glob("*.wrd"))]
        datasets["timit-dev (per utterance)"] = utterances
        datasets[
            f"timit-dev programmes (a speaker's sentences, pauses {'/'.join(str(p) for p in PROGRAMME_PAUSES_MS)} ms)"
        ] = timit_programmes(utterances)
    else:
        print(f"TIMIT data not found at {directory} (set NARRATION_TIMIT_DIR)")

    print("systems: " + ", ".join(f"{system.name} ({system.version})" for system in systems))
    for name, reason in missing.items():
        print(f"{name}: not importable here, skipped ({reason})")
    print(
        f"rules ({PROFILE}): share of cues breaking each; whisperX options {WHISPERX_OPTIONS}; "
        "stable-ts WhisperResult.regroup() default + to_srt_vtt(word_level=False)"
    )
    figures: dict = {"missing": missing}
    for title, programmes in datasets.items():
        started = time.perf_counter()
        tallies = run_dataset(programmes, systems)
        words = sum(len(p.words) for p in programmes)
        print(f"\n{title}: {len(programmes)} files, {words} words ({time.perf_counter() - started:.1f} s)")
        print(format_table(tallies))
        ours = {name: (t.cues, t.broken) for name, t in tallies.items() if name.startswith("ours")}
        agree = all(figures_ == ours["ours"] for figures_ in ours.values())
        print(f"our SRT, VTT, ASS and TTML read back: {'the same cues and rule breaks' if agree else 'DIFFER'}")
        floor = sum(fewest_broken_cues(p.words) for p in programmes)
        print(
            f"cues breaking any rule: ours {tallies['ours'].cues_broken}; the fewest any cut allows with our cue "
            f"timing (cutting anywhere, even mid-sentence across a pause): {floor}"
        )
        if args.show:
            print(format_examples(tallies["ours"], args.show))
        figures[title] = {name: {"cues": t.cues, **t.shares()} for name, t in tallies.items()}
        figures[title]["floor_broken_cues"] = floor
    return figures


if __name__ == "__main__":
    main()
