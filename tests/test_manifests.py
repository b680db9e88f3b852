"""Manifest validation: every bad line is named by file, line, field and reason; good lines survive."""

from __future__ import annotations

import json

import pytest

from narration.manifests import ManifestError, ValidationContext, parse_manifest
from narration.settings import Settings


def ctx(**overrides) -> ValidationContext:
    return ValidationContext(settings=Settings(**overrides), voices={"narrator", "anna"})


def jsonl(*objs) -> bytes:
    return "\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs).encode()


def only_error(parsed):
    assert len(parsed.errors) == 1, parsed.errors
    return parsed.errors[0]


def test_txt_one_utterance_per_line_with_generated_ids():
    parsed = parse_manifest("news.txt", b"Hello there.\n\nSecond line, with 2 numbers.\n", ctx())
    assert [i.item_id for i in parsed.items] == ["news-00001", "news-00003"]
    assert [i.line for i in parsed.items] == [1, 3]
    assert parsed.items[0].voice == "narrator" and parsed.errors == []


def test_jsonl_fields_are_carried():
    parsed = parse_manifest("a.jsonl", jsonl({"id": "x1", "text": "Hi.", "voice": "anna", "speed": 1.2,
                                              "language": "en-GB", "seed": 7}), ctx())
    item = parsed.items[0]
    assert (item.item_id, item.voice, item.speed, item.language, item.seed) == ("x1", "anna", 1.2, "en", 7)


def test_csv_with_header():
    data = b'id,text,voice\nc1,"Hello, world.",anna\nc2,Plain text,\n'
    parsed = parse_manifest("m.csv", data, ctx())
    assert [(i.item_id, i.voice, i.line) for i in parsed.items] == [("c1", "anna", 2), ("c2", "narrator", 3)]


@pytest.mark.parametrize(
    "line, field, reason",
    [
        ({"id": "e1", "text": "   "}, "text", "text is empty"),
        ({"id": "e2", "text": "x" * 100_001}, "text", "over the limit of 100000"),
        ('{"id": "e3", "text": "unterminated', None, "invalid JSON"),
        ({"id": "e4", "text": "Hi.", "colour": "red"}, "colour", "unknown field"),
        ({"id": "e5", "text": "Hi.", "voice": "nobody"}, "voice", "unknown voice 'nobody'"),
        ({"id": "../etc/passwd", "text": "Hi."}, "id", "id must be"),
        ({"id": "a/b", "text": "Hi."}, "id", "id must be"),
        ({"id": "e8", "text": 42}, "text", "must be a string"),
        ({"id": "e9"}, "text", "required field is missing"),
        ({"id": "e10", "text": "Hi.", "speed": 9}, "speed", "less than or equal to 2"),
        ({"id": "e11", "text": "!!! ... ???"}, "text", "nothing speakable"),
        ({"id": "e12", "text": "<speak>Hi</speak>"}, "text", "markup"),
        ({"id": "e13", "text": "Hi.", "language": "xx"}, "language", "unsupported language"),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_each_bad_line_is_rejected_with_line_field_and_reason(line, field, reason):
    data = jsonl({"id": "good-1", "text": "A good line."}, line, {"id": "good-2", "text": "Another good line."})
    parsed = parse_manifest("batch.jsonl", data, ctx())
    assert [i.item_id for i in parsed.items] == ["good-1", "good-2"]
    error = only_error(parsed)
    assert (error.manifest, error.line, error.field) == ("batch.jsonl", 2, field)
    assert reason in error.reason
    assert error.raw


def test_duplicate_id_names_the_first_use():
    parsed = parse_manifest("d.jsonl", jsonl({"id": "same", "text": "One."}, {"id": "same", "text": "Two."}), ctx())
    error = only_error(parsed)
    assert error.line == 2 and error.field == "id" and "first used at d.jsonl:1" in error.reason


def test_duplicate_ids_across_manifests_of_one_batch():
    shared = ctx()
    parse_manifest("one.jsonl", jsonl({"id": "dup", "text": "One."}), shared)
    parsed = parse_manifest("two.jsonl", jsonl({"id": "dup", "text": "Two."}), shared)
    assert "first used at one.jsonl:1" in only_error(parsed).reason


def test_csv_unknown_column_is_reported_on_the_header_line():
    parsed = parse_manifest("m.csv", b"text,mood\nHello,happy\n", ctx())
    error = only_error(parsed)
    assert (error.line, error.field) == (1, "header") and "mood" in error.reason
    assert parsed.items == []


def test_invalid_utf8_costs_only_its_line():
    data = b"Good line one.\n" + b"bad \xff\xfe bytes\n" + b"Good line three.\n"
    parsed = parse_manifest("enc.txt", data, ctx())
    assert len(parsed.items) == 2
    assert only_error(parsed).line == 2 and "UTF-8" in only_error(parsed).reason


def test_bom_and_crlf_are_accepted():
    parsed = parse_manifest("win.txt", b"\xef\xbb\xbfFirst line.\r\nSecond line.\r\n", ctx())
    assert [i.text for i in parsed.items] == ["First line.", "Second line."]


@pytest.mark.parametrize("name, data, message", [
    ("empty.txt", b"", "empty"),
    ("blank.jsonl", b"\n \n", "empty"),
    ("notes.docx", b"Hello", "unsupported manifest type"),
    ("header-only.csv", b"", "empty"),
])
def test_file_level_problems_raise_manifest_error(name, data, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(name, data, ctx())


def test_manifest_over_size_limit():
    with pytest.raises(ManifestError, match="size limit"):
        parse_manifest("big.txt", b"Hello there.\n" * 100, ctx(max_manifest_bytes=200))


def test_batch_item_limit_rejects_the_excess_lines():
    parsed = parse_manifest("many.txt", b"One.\nTwo.\nThree.\n", ctx(max_items_per_batch=2))
    assert len(parsed.items) == 2
    assert only_error(parsed).line == 3 and "batch limit" in only_error(parsed).reason


def test_plan_fails_clearly_when_no_line_is_valid(storage, narrator):
    from narration.plan import BatchOptions, load_quarantine, plan_batch

    storage.put_bytes("incoming/bad.jsonl", jsonl({"id": "x", "text": ""}, "{not json"))
    with pytest.raises(ManifestError, match="no valid line"):
        plan_batch(storage, Settings(), "b1", ["incoming/bad.jsonl"], BatchOptions(), {"narrator"})
    quarantined = load_quarantine(storage, "b1")
    assert [(e.line, e.field) for e in quarantined] == [(1, "text"), (2, None)]


def test_plan_chunks_valid_items_and_quarantines_the_rest(storage, narrator):
    from narration.plan import BatchOptions, load_plan, plan_batch

    lines = [{"id": f"i{n}", "text": f"Line number {n}."} for n in range(5)] + [{"id": "bad", "text": "Hi", "x": 1}]
    storage.put_bytes("incoming/m.jsonl", jsonl(*lines))
    plan = plan_batch(storage, Settings(), "b2", ["incoming/m.jsonl"], BatchOptions(chunk_size=2), {"narrator"})
    assert [c.item_ids for c in plan.chunks] == [["i0", "i1"], ["i2", "i3"], ["i4"]]
    assert plan.quarantined == 1 and load_plan(storage, "b2").chunks == plan.chunks
    assert storage.get_json(plan.chunks[0].key)["items"][0]["item_id"] == "i0"
