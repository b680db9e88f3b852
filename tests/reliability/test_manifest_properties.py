"""Property tests of the manifest parser: whatever the bytes, it never crashes, every non-blank line is accepted
or rejected with a reason exactly once, and whatever it accepts is safe to store and to use in S3 keys."""

from __future__ import annotations

import csv
import io
import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from narration.layout import BatchLayout, safe_component
from narration.manifests import ID_PATTERN, ManifestError, ValidationContext, parse_manifest
from narration.settings import Settings

VOICES = {"narrator", "anna"}
PROPERTY = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Characters that have broken parsers before: controls, bidi overrides, line separators, BOMs, surrogates, emoji.
NASTY = st.sampled_from(list("\x00\x07\t\r\x0b\x0c\x1c\x7f\x85\xa0\u2028\u2029\u202e\u200b\ufeff\ufffd"
                             "\U0001f389<>&/.\\\"',"))
ANY_CHAR = st.characters(codec=None, categories=None)  # includes lone surrogates
TEXTISH = st.text(st.one_of(st.characters(codec="utf-8"), NASTY), max_size=60)
WORDS = st.sampled_from(["Hello there.", "The council met at 10:30.", "A", "2029", "Dr. Hart", "emoji 🎉 ok"])
IDS = st.one_of(st.from_regex(r"[A-Za-z0-9._-]{1,8}", fullmatch=True), TEXTISH, st.integers(), st.none())
VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXTISH,
                   st.text(ANY_CHAR, max_size=8), st.lists(st.integers(), max_size=2))
FIELD_NAMES = st.sampled_from(["id", "text", "voice", "language", "speed", "seed", "metadata", "colour"])
JSON_OBJECTS = st.fixed_dictionaries(
    {"text": st.one_of(WORDS, TEXTISH, VALUES)},
    optional={"id": IDS, "voice": st.one_of(st.sampled_from(sorted(VOICES) + ["ghost"]), VALUES),
              "language": st.one_of(st.sampled_from(["en", "en-GB", "fr"]), VALUES),
              "speed": VALUES, "seed": VALUES,
              "metadata": st.one_of(st.dictionaries(TEXTISH, VALUES, max_size=2), VALUES),
              "colour": VALUES})


def context(**overrides) -> ValidationContext:
    return ValidationContext(settings=Settings(**overrides), voices=set(VOICES))


def check_parsed(name: str, data: bytes, parsed, blank_lines: set[int] | None = None) -> None:
    """What every parse must satisfy, whatever the input."""
    lines_total = len(re.split(rb"\r\n|\r|\n", data))  # the csv module also ends lines at a lone CR
    answered = [i.line for i in parsed.items] + [e.line for e in parsed.errors]
    assert len(answered) == len(set(answered)), "a line was answered twice"
    assert all(1 <= line <= lines_total for line in answered)
    assert parsed.lines_seen == len(answered), "every line seen is accounted for"
    for error in parsed.errors:
        assert error.reason.strip() and error.manifest == name
        error.model_dump_json().encode("utf-8")  # the quarantine file can be written
    layout = BatchLayout("b")
    for item in parsed.items:
        assert ID_PATTERN.match(item.item_id) and ".." not in item.item_id
        assert safe_component(item.item_id) == item.item_id, "an id must be its own S3 key component"
        assert layout.item_prefix(item.item_id).startswith(layout.root)
        assert item.voice in VOICES and item.text.strip()
        item.model_dump_json().encode("utf-8")  # plan and chunk specs can be written
    if blank_lines is not None:
        expected = set(range(1, data.count(b"\n") + 2)) - blank_lines
        assert set(answered) == expected, "every non-blank line is accepted or rejected"


@PROPERTY
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".txt", ".jsonl", ".csv"]))
def test_arbitrary_bytes_never_crash_the_parser(data, suffix):
    name = f"fuzz{suffix}"
    try:
        parsed = parse_manifest(name, data, context())
    except ManifestError as exc:
        assert str(exc).startswith(name)
        return
    check_parsed(name, data, parsed)


def _is_blank(raw: bytes) -> bool:
    try:
        return not raw.decode("utf-8").removeprefix("\ufeff").strip()
    except UnicodeDecodeError:
        return False


@PROPERTY
@given(lines=st.lists(st.one_of(WORDS, TEXTISH, st.just(""), st.just("   ")), min_size=1, max_size=12))
def test_every_txt_line_is_accepted_or_rejected_with_a_reason(lines):
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    try:
        parsed = parse_manifest("lines.txt", data, context(max_items_per_batch=5))
    except ManifestError:
        assert not any(not _is_blank(raw) for raw in data.split(b"\n"))
        return
    blank = {n for n, raw in enumerate(data.split(b"\n"), start=1) if _is_blank(raw)}
    check_parsed("lines.txt", data, parsed, blank)


@PROPERTY
@given(lines=st.lists(st.one_of(JSON_OBJECTS.map(json.dumps), JSON_OBJECTS.map(lambda o: json.dumps(o)[:-1]),
                                TEXTISH, st.just("")), min_size=1, max_size=10))
def test_every_jsonl_line_is_accepted_or_rejected_with_a_reason(lines):
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    try:
        parsed = parse_manifest("objects.jsonl", data, context())
    except ManifestError:
        assert all(_is_blank(raw) for raw in data.split(b"\n"))
        return
    blank = {n for n, raw in enumerate(data.split(b"\n"), start=1) if _is_blank(raw)}
    check_parsed("objects.jsonl", data, parsed, blank)


@PROPERTY
@given(header=st.lists(st.sampled_from(["id", "text", "voice", "speed", "seed", "mood"]), min_size=1, max_size=4),
       rows=st.lists(st.lists(st.one_of(WORDS, TEXTISH), min_size=0, max_size=5), max_size=8))
def test_every_csv_record_is_accepted_or_rejected_with_a_reason(header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    data = text.encode("utf-8", "surrogatepass")
    try:
        parsed = parse_manifest("table.csv", data, context())
    except ManifestError as exc:
        assert "no data rows" in str(exc) or "empty" in str(exc)
        return
    check_parsed("table.csv", data, parsed)
    header_errors = [e for e in parsed.errors if e.field == "header"]
    if header_errors:  # a bad header rejects the file as a whole, on line 1, with the reason
        assert parsed.items == [] and len(parsed.errors) == 1 and header_errors[0].line == 1
        return
    # The csv module itself is the oracle for how many records there are.
    reader = csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape").removeprefix("\ufeff"), newline=""))
    next(reader)
    records = sum(1 for row in reader if any(cell.strip() for cell in row))
    assert len(parsed.items) + len(parsed.errors) == records
