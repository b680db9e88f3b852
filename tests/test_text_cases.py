"""Real-world text through the real pipeline (local S3, espeak-ng, pocketsphinx, the render step): folders of
same-named manifests, dashes without spaces, scripts no voice speaks, pasted tabs and line breaks, numbered
abbreviations, dates and e-mail addresses."""

from __future__ import annotations

import json

import pysubs2
import pytest

from narration.layout import BatchLayout
from narration.normalize import normalize_script
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, load_quarantine, plan_batch
from narration.render import render_chunk
from narration.settings import Settings
from tests.dag_runs import jsonl

LINES = [
    {"id": "dash", "text": "I asked what—no! She left."},
    {"id": "hebrew", "text": "שלום עולם"},
    {"id": "arabic", "text": "مرحبا بالعالم"},
    {"id": "mixed", "text": "The word שלום means peace."},
    {"id": "tabbed", "text": "Pasted\ttext\twith tabs."},
    {"id": "figure", "text": "The chart is in the appendix, see Fig. 7, p. 112. It shows every region."},
    {"id": "date-us", "text": "It opened on 3/4/2025.", "language": "en-US"},
    {"id": "date-gb", "text": "It opened on 3/4/2025.", "language": "en-GB"},
    {"id": "email", "text": "Write to jane.doe@example.org today."},
    {"id": "bad\nid", "text": "An id with a newline."},
]


def run_pipeline(storage, batch_id: str, keys: list[str]):
    plan = plan_batch(storage, Settings(), batch_id, keys, BatchOptions(chunk_size=50), {"narrator"})
    settings = Settings()
    for ref in plan.chunks:
        chunk = load_chunk(storage, ref.key)
        synthesize_chunk(storage, settings, chunk)
        align_chunk(storage, settings, chunk)
        render_chunk(storage, settings, chunk.model_copy(update={"formats": ["srt", "json"]}))
    return plan


def words_doc(storage, batch_id: str, item_id: str) -> dict:
    return storage.get_json(BatchLayout(batch_id).subtitle(item_id, "json"))


@pytest.fixture()
def text_batch(storage, narrator):
    storage.put_bytes("incoming/text.jsonl", jsonl(*LINES))
    storage.put_bytes("incoming/pasted.csv", b'id,text\ncsv-nl,"A cell that runs\nover two lines."\n')
    plan = run_pipeline(storage, "text", ["incoming/text.jsonl", "incoming/pasted.csv"])
    return plan, {e.line: e for e in load_quarantine(storage, "text") if e.manifest == "text.jsonl"}


def test_same_named_manifests_in_different_folders_keep_their_folders(storage, narrator):
    storage.put_bytes("incoming/teamA/news.txt", b"Rain in the north.\nSun in the south.\n")
    storage.put_bytes("incoming/teamB/news.txt", b"Markets were calm.\n")
    storage.put_bytes("incoming/teamA/ids.jsonl", jsonl({"id": "shared", "text": "First use."}))
    storage.put_bytes("incoming/teamB/ids.jsonl", jsonl({"id": "shared", "text": "Second use."}))
    keys = ["incoming/teamA/news.txt", "incoming/teamB/news.txt", "incoming/teamA/ids.jsonl",
            "incoming/teamB/ids.jsonl"]
    plan = plan_batch(storage, Settings(), "folders", keys, BatchOptions(), {"narrator"})
    assert [(i.item_id, i.manifest) for i in plan.items] == [
        ("teamA-news-00001", "teamA/news.txt"), ("teamA-news-00002", "teamA/news.txt"),
        ("teamB-news-00001", "teamB/news.txt"), ("shared", "teamA/ids.jsonl")]
    [duplicate] = load_quarantine(storage, "folders")
    assert (duplicate.manifest, duplicate.line, duplicate.field) == ("teamB/ids.jsonl", 1, "id")
    assert "duplicate id 'shared' (first used at teamA/ids.jsonl:1)" in duplicate.reason


def test_unspeakable_scripts_are_rejected_for_what_they_are(text_batch):
    _, rejected = text_batch
    assert rejected[2].field == "text" and "script the voices cannot speak (Hebrew)" in rejected[2].reason
    assert rejected[3].field == "text" and "script the voices cannot speak (Arabic)" in rejected[3].reason
    assert "punctuation" not in rejected[2].reason + rejected[3].reason


def test_a_newline_where_it_is_an_error_is_named_a_newline(text_batch):
    _, rejected = text_batch
    assert set(rejected) == {2, 3, 10}
    assert rejected[10].field == "id" and "a newline, U+000A" in rejected[10].reason


def test_mixed_script_words_are_flagged_on_the_item_not_silently_dropped(storage, text_batch):
    plan, _ = text_batch
    item = next(i for i in plan.items if i.item_id == "mixed")
    assert item.unspoken_words == ["שלום"]
    doc = words_doc(storage, plan.batch_id, "mixed")
    assert doc["metadata"]["unspoken_words"] == ["שלום"]
    assert any("שלום" in line for cue in doc["cues"] for line in cue["lines"])  # still shown
    row = storage.get_json(BatchLayout(plan.batch_id).result("mixed"))
    assert row["status"] == "done" and row["unspoken_words"] == "שלום"
    plain = storage.get_json(BatchLayout(plan.batch_id).result("dash"))
    assert plain["unspoken_words"] is None


def test_em_dash_without_spaces_is_two_spoken_words_both_timed(storage, text_batch):
    plan, _ = text_batch
    words = {w["text"]: w for w in words_doc(storage, plan.batch_id, "dash")["words"]}
    assert words["what—no!"]["spoken"] == "what no" and words["what—no!"]["timed"]
    assert words["what—no!"]["end_ms"] - words["what—no!"]["start_ms"] > 250  # two words' worth of sound


def test_tabs_and_csv_line_breaks_are_spacing(storage, text_batch):
    plan, _ = text_batch
    items = {i.item_id: i for i in plan.items}
    assert items["tabbed"].text == "Pasted text with tabs."
    assert items["csv-nl"].text == "A cell that runs over two lines."
    for item_id in ("tabbed", "csv-nl"):
        assert storage.get_json(BatchLayout(plan.batch_id).result(item_id))["status"] == "done"


def test_numbered_abbreviation_stays_with_its_number_in_one_cue(storage, text_batch):
    plan, _ = text_batch
    srt = storage.get_text(BatchLayout(plan.batch_id).subtitle("figure", "srt"))
    cues = [event.plaintext.replace("\n", " ") for event in pysubs2.SSAFile.from_string(srt)]
    assert any("p. 112." in cue for cue in cues), cues
    assert not any(cue.startswith("112.") for cue in cues), cues
    assert any("Fig. 7," in cue for cue in cues), cues
    spoken = {w["text"]: w["spoken"] for w in words_doc(storage, plan.batch_id, "figure")["words"]}
    assert (spoken["Fig."], spoken["p."]) == ("figure", "page")


def test_dates_follow_the_language_and_emails_are_spelled_out(storage, text_batch):
    plan, _ = text_batch

    def spoken(item_id: str, token: str) -> str:
        return next(w["spoken"] for w in words_doc(storage, plan.batch_id, item_id)["words"] if w["text"] == token)

    assert spoken("date-us", "3/4/2025.") == "march fourth twenty twenty five"
    assert spoken("date-gb", "3/4/2025.") == "the third of april twenty twenty five"
    assert spoken("email", "jane.doe@example.org") == "jane dot doe at example dot org"
    synthesis = storage.get_json(BatchLayout(plan.batch_id).synthesis("date-gb"))
    assert json.dumps(synthesis["tokens"]).count("april") == 1  # the synthesizer spoke the British reading


@pytest.mark.parametrize("text, locale, expected", [
    ("25/12/2025", "en-us", "december twenty fifth twenty twenty five"),  # only day-first makes sense
    ("12/25/2025", "en-gb", "the twenty fifth of december twenty twenty five"),
    ("2025-03-04", "en-gb", "the fourth of march twenty twenty five"),
    ("13/13/2025", "en-us", "thirteen thirteen twenty twenty five"),  # not a date: read as numbers
    ("ops+alerts@mail.example.co.uk", "en", "ops plus alerts at mail dot example dot co dot uk"),
])
def test_date_and_address_readings(text, locale, expected):
    assert " ".join(w for t in normalize_script(text, locale) for w in t.spoken) == expected
