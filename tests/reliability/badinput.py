"""The bad-input corpus: hostile manifests and reference voices (files under corpus/), what each must produce,
and a runner that puts every case through the real manifest parser or voice validation and tabulates the answers.

Used by test_bad_input.py (one test per case, the table at the end of the pytest run) and by
``python -m tests.reliability.corpus_table`` (the table alone, for CI logs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from narration.audio import to_wav_bytes
from narration.lexicons import LexiconError, parse_lexicon
from narration.manifests import ManifestError, ValidationContext, parse_manifest
from narration.settings import Settings
from narration.voices import VoiceError, validate_reference

CORPUS = Path(__file__).resolve().parent / "corpus"
VOICES_IN_LIBRARY = {"narrator", "anna"}
REFERENCE_TRANSCRIPT = "A reference recording for the corpus."


def _too_long_reference() -> bytes:
    # 13 s of 16 kHz audio is 200 kB even at 8 bits: made here instead of stored.
    t = np.arange(13 * 16000) / 16000
    return to_wav_bytes(0.3 * np.sin(2 * np.pi * 220 * t), 16000)


def _huge_csv_field() -> bytes:
    # One cell over the csv module's 131072-character field limit, between two good rows.
    return b"id,text\nh1,A good row.\nh2," + b"x" * 140_000 + b"\nh3,Another good row.\n"


@dataclass(frozen=True)
class Case:
    """One hostile input and what it must produce.

    ``raises``: a file-level error containing this text. Otherwise ``accepted`` lists the line numbers (or voice
    ids) that must pass and ``rejected`` maps each other line number to text its reason must contain.
    """

    name: str
    kind: str  # "manifest" | "voice" | "lexicon"
    file: str | None = None
    make: Callable[[], bytes] | None = None
    raises: str | None = None
    accepted: tuple[int, ...] = ()
    rejected: dict[int, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    voice_id: str = "corpus-voice"
    transcript: str = REFERENCE_TRANSCRIPT

    def data(self) -> bytes:
        return self.make() if self.make else (CORPUS / self.file).read_bytes()

    @property
    def label(self) -> str:
        return self.name


@dataclass
class Outcome:
    """What the product answered: a file-level error, or per line accepted (item id) / rejected (reason)."""

    error: str | None = None
    lines: dict[int, str] = field(default_factory=dict)  # line -> "accepted <id>" | "rejected <field>: <reason>"
    accepted: set[int] = field(default_factory=set)
    crash: str | None = None

    def rows(self) -> list[tuple[str, str]]:
        if self.crash:
            return [("-", f"CRASH {self.crash}")]
        if self.error is not None:
            return [("file", self.error)]
        return [(f"line {n}", self.lines[n]) for n in sorted(self.lines)]


def M(name: str, **kw) -> Case:
    return Case(name=name, kind="manifest", file=kw.pop("file", f"manifests/{name}"), **kw)


def V(name: str, **kw) -> Case:
    return Case(name=name, kind="voice", file=kw.pop("file", f"voices/{name}"), **kw)


def L(name: str, **kw) -> Case:
    return Case(name=name, kind="lexicon", file=kw.pop("file", f"lexicons/{name}"), **kw)


CASES: list[Case] = [
    # Encodings and line endings
    M("latin1.txt", accepted=(1,), rejected={2: "not valid UTF-8"}),
    M("utf16.txt", raises="UTF-16"),
    M("bom.jsonl", accepted=(1, 2)),
    M("crlf.csv", accepted=(2, 3)),
    M("binary.txt", rejected={1: "control characters", 2: "not valid UTF-8", 3: "not valid UTF-8"}),
    # Empty and near-empty files
    M("empty.txt", raises="empty"),
    M("blank-lines.jsonl", raises="empty"),
    M("header-only.csv", raises="header row but no data rows"),
    M("notes.docx", raises="unsupported manifest type"),
    # Limits
    M("long-line.txt", settings={"max_text_chars": 1000}, accepted=(1,), rejected={2: "over the limit of 1000"}),
    M("over-batch-limit.txt", settings={"max_items_per_batch": 4}, accepted=(1, 2, 3, 4),
      rejected={5: "batch limit of 4", 6: "batch limit of 4"}),
    M("over-size-limit.txt", settings={"max_manifest_bytes": 64}, raises="over the manifest size limit of 64"),
    M("huge-field.csv", file=None, make=_huge_csv_field, accepted=(2, 4),
      rejected={3: "unreadable CSV record: field larger than field limit"}),
    M("big-metadata.jsonl", accepted=(1,), rejected={2: "metadata is 5"}),
    # JSON and types
    M("invalid-json.jsonl", accepted=(1,), rejected={
        2: "invalid JSON: Unterminated string starting at (column 22)", 3: "expected a JSON object, got list",
        4: "the field 'text' appears more than once", 5: "nested too deeply",
        6: "invalid JSON: Expecting value (column 1)"}),
    M("wrong-types.jsonl", accepted=(1,), rejected={
        2: "text: must be a string, got int", 3: "speed: Input should be a valid number",
        4: "speed: must be a number, got a boolean", 5: "seed: Input should be greater than or equal to 0",
        6: "seed: Input should be a valid integer, got a number with a fractional part",
        7: "metadata: Input should be a valid dictionary", 8: "id: must be a string, got int",
        9: "language: must be a string, got int", 10: "speed: Input should be less than or equal to 2",
        11: "text: must be a string, got list", 12: "text: required field is missing"}),
    # Voices and languages named by lines
    M("unknown-voice.jsonl", accepted=(1,), rejected={2: "unknown voice 'ghost'", 3: "unknown voice '../narrator'"}),
    M("languages.jsonl", accepted=(1, 2), rejected={3: "unsupported language 'fr'", 4: "unsupported language 'xx-yy'"}),
    # Ids: duplicates and S3 key safety
    M("duplicate-ids.csv", accepted=(2, 3), rejected={4: "duplicate id 'dup' (first used at duplicate-ids.csv:2)"}),
    M("unsafe-ids.jsonl", accepted=(1,), rejected={n: "id must be" for n in range(2, 14)}),
    # Text content
    M("unspeakable.txt", accepted=(1,), rejected={n: "nothing speakable" for n in range(2, 7)}),
    M("markup.jsonl", accepted=(1,), rejected={n: "markup (SSML/HTML tags) is not supported" for n in range(2, 8)}),
    M("control-chars.txt", accepted=(1, 5), rejected={  # a tab is spacing (line 5)
        2: "control characters (U+0007", 3: "control characters (U+007F", 4: "control characters (U+202E",
        6: "control characters (a NUL byte, U+0000", 7: "control characters (U+0085"}),
    M("surrogates.jsonl", accepted=(1,), rejected={2: "text: Input should be a valid string",
                                                   3: "metadata contains invalid Unicode"}),
    # CSV structure
    M("bad-header.csv", rejected={1: "unknown column(s) ['mood']"}),
    M("repeated-column.csv", rejected={1: "repeated column(s) ['text']"}),
    M("ragged.csv", accepted=(2,), rejected={3: "expected 2 columns, got 4", 4: "expected 2 columns, got 1"}),
    # Reference voices
    V("ok.wav", accepted=(1,)),
    V("too-long.wav", file=None, make=_too_long_reference, raises="over the 12 s limit"),
    V("too-short.wav", raises="under the 1 s minimum"),
    V("silent.wav", raises="silent"),
    V("narrow-band.wav", raises="under the 16000 Hz minimum"),
    V("mp3-bytes.wav", raises="not usable audio"),
    V("text.wav", raises="not usable audio"),
    V("empty.wav", raises="not usable audio"),
    V("truncated.wav", raises="not usable audio"),
    V("float32.wav", raises="0.06 s, under the 1 s minimum"),  # read through soundfile: too short, not unreadable
    V("24bit.wav", raises="0.25 s, under the 1 s minimum"),
    V("zero-rate.wav", raises="not usable audio"),
    V("voice id with slash", file="voices/ok.wav", voice_id="a/b", raises="must be letters, digits"),
    V("voice id with dot dot", file="voices/ok.wav", voice_id="..", raises="must be letters, digits"),
    V("voice id with newline", file="voices/ok.wav", voice_id="narrator\n", raises="must be letters, digits"),
    V("voice id of 200 chars", file="voices/ok.wav", voice_id="v" * 200, raises="must be letters, digits"),
    V("empty transcript", file="voices/ok.wav", transcript="  ", raises="transcript is empty"),
    # Lexicons named by lines, and pronunciation lexicons (file:line: entry: reason)
    M("unknown-lexicon.jsonl", accepted=(1,), rejected={2: "lexicons: unknown lexicon(s) ['ghost']",
                                                        3: "lexicons: unknown lexicon(s) ['names', 'ghost']",
                                                        4: "lexicons: Input should be a valid list"}),
    L("names.pls", accepted=(1,)),
    L("names.csv", accepted=(1,)),
    L("not-xml.pls", raises="not-xml.pls:1: not well-formed XML: Start tag expected"),
    L("unclosed.pls", raises="unclosed.pls:6: not well-formed XML: Opening and ending tag mismatch"),
    L("wrong-namespace.pls", raises="wrong-namespace.pls:2: the root element is "
                                    "'{http://www.w3.org/2005/pronunciation}lexicon'"),
    L("wrong-version.pls", raises="wrong-version.pls:2: version '2.0'; PLS version \"1.0\" is required"),
    L("unknown-alphabet.pls", raises="unknown-alphabet.pls:3: unknown alphabet 'arpabet'"),
    L("no-grapheme.pls", raises="no-grapheme.pls:5: <lexeme> has no <grapheme>"),
    L("no-reading.pls", raises="no-reading.pls:5: entry 'Worcester': the entry has neither an alias nor a phoneme"),
    L("bad-ipa.pls", raises="bad-ipa.pls:5: entry 'Worcester': phoneme \"w'Ust@\": symbol \"'\" (U+0027) is not IPA"),
    L("bad-xsampa.pls", raises="bad-xsampa.pls:4: entry 'Nguyen': phoneme 'ŋwiən': symbol 'ŋ' is not X-SAMPA"),
    L("conflicting.pls", raises="conflicting.pls:5: entry 'sql': conflicts with the entry for 'SQL' at line 3"),
    L("entities.pls", raises="entities.pls:2: a DOCTYPE is not allowed"),
    L("phrases.pls", accepted=(1,)),
    L("phrase-punctuation-word.pls", raises="phrase-punctuation-word.pls:4: entry 'Tom - Jerry': word 2 of the "
                                            "phrase, '-', is only punctuation"),
    L("punctuation-grapheme.csv", raises="punctuation-grapheme.csv:3: entry '...': the grapheme is only punctuation"),
    L("long-phrase.csv", raises="long-phrase.csv:3: entry 'the quick brown fox jumps over the lazy dog and cat': a "
                                "phrase of 11 words, over the limit of 10"),
    L("both.csv", raises="both.csv:3: entry 'Nguyen': give an alias or a phoneme, not both"),
    L("bad-alphabet.csv", raises="bad-alphabet.csv:3: entry 'Nguyen': unknown alphabet 'arpabet'"),
    L("names.txt", file="lexicons/names.csv", raises="names.txt: unknown lexicon format '.txt'"),
]


def run_case(case: Case) -> Outcome:
    """Put one case through the product: the manifest parser, or the voice library's validation."""
    out = Outcome()
    try:
        if case.kind == "voice":
            validate_reference(case.voice_id, case.data(), case.transcript)
            out.accepted = {1}
            out.lines[1] = f"accepted voice {case.voice_id!r}"
            return out
        if case.kind == "lexicon":
            lexicon = parse_lexicon("corpus", case.data(), case.name)
            out.accepted = {1}
            out.lines[1] = f"accepted lexicon: {len(lexicon.entries)} entries"
            return out
        ctx = ValidationContext(settings=Settings(**case.settings), voices=set(VOICES_IN_LIBRARY))
        parsed = parse_manifest(case.name, case.data(), ctx)
    except (ManifestError, VoiceError, LexiconError) as exc:
        out.error = str(exc)
        return out
    except Exception as exc:  # the corpus exists to find these
        out.crash = f"{type(exc).__name__}: {exc}"
        return out
    for item in parsed.items:
        out.accepted.add(item.line)
        out.lines[item.line] = f"accepted {item.item_id}"
    for err in parsed.errors:
        out.lines[err.line] = f"rejected {err.field + ': ' if err.field else ''}{err.reason}"
    return out


def mismatches(case: Case, outcome: Outcome) -> list[str]:
    """How the outcome differs from what the case must produce (empty when it matches)."""
    if outcome.crash:
        return [f"crashed: {outcome.crash}"]
    if case.raises is not None:
        if outcome.error is None or case.raises not in outcome.error:
            return [f"expected a file-level error containing {case.raises!r}, got {outcome.error or outcome.lines}"]
        return []
    problems = []
    if outcome.error is not None:
        problems.append(f"unexpected file-level error: {outcome.error}")
    if outcome.accepted != set(case.accepted):
        problems.append(f"accepted lines {sorted(outcome.accepted)}, expected {sorted(case.accepted)}")
    for line, text in case.rejected.items():
        got = outcome.lines.get(line, "")
        if not got.startswith("rejected") or text not in got:
            problems.append(f"line {line}: expected a rejection containing {text!r}, got {got!r}")
    unexpected = set(outcome.lines) - set(case.accepted) - set(case.rejected)
    if unexpected:
        problems.append(f"lines {sorted(unexpected)} answered but not expected by the case")
    return problems


def format_table(results: list[tuple[Case, Outcome, list[str]]], width: int = 150) -> str:
    """A plain-text table: one row per answered line (or file-level error) of every case."""
    rows = [("case", "kind", "where", "answer")]
    for case, outcome, problems in results:
        for where, answer in outcome.rows():
            rows.append((case.label, case.kind, where, answer))
        for problem in problems:
            rows.append((case.label, case.kind, "MISMATCH", problem))
    widths = [max(len(_clean(r[i])) for r in rows) for i in range(3)]
    lines = []
    for n, row in enumerate(rows):
        head = "  ".join(_clean(row[i]).ljust(widths[i]) for i in range(3))
        answer = _clean(row[3])
        room = max(width - len(head) - 2, 40)
        lines.append(f"{head}  {answer if len(answer) <= room else answer[:room - 3] + '...'}")
        if n == 0:
            lines.append("-" * min(width, len(head) + 2 + room))
    matched = sum(1 for _, _, problems in results if not problems)
    lines.append(f"{matched}/{len(results)} cases answered as expected")
    return "\n".join(lines)


def _clean(text: str) -> str:
    # The table must stay one line a row whatever the input carried.
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", "?", text)


def run_all(cases: list[Case] | None = None) -> list[tuple[Case, Outcome, list[str]]]:
    results = []
    for case in cases or CASES:
        outcome = run_case(case)
        results.append((case, outcome, mismatches(case, outcome)))
    return results


try:  # the table is collected across the pytest session and printed at its end (see conftest.py)
    import pytest

    RESULTS_KEY = pytest.StashKey[list]()
except ImportError:  # pragma: no cover - the table module works without pytest
    RESULTS_KEY = None
