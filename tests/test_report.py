"""Batch report: rows from real records (quarantined lines included), the CSV read back with pandas, the
summary totals, and the self-contained HTML page (players, waveforms with word boundaries, escaping)."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from narration.normalize import normalize_script
from narration.report import (
    MAX_OPEN_CUES,
    ItemMedia,
    ItemReportRow,
    item_row,
    quarantine_row,
    report_csv,
    report_html,
    summarize,
    waveform_svg,
)
from narration.schema import ItemSpec, ItemStatus, LineError, SynthesisRecord, TimingRecord, WordTiming
from narration.subtitles import segment_cues


def words_for(text: str, untimed=(), scores=None) -> list[WordTiming]:
    words, t = [], 100
    for token in normalize_script(text):
        spoken = " ".join(token.spoken)
        duration = 60 * len(spoken) + 40
        timed = token.index not in untimed
        score = (scores or {}).get(token.index, 0.9) if timed else None
        words.append(WordTiming.of(token, t if timed else None, t + duration if timed else None, score,
                                   source="pocketsphinx"))
        t += duration + 50
    return words


def records(item_id: str, text: str, *, method="pocketsphinx", fallback=None, untimed=(), scores=None):
    item = ItemSpec(item_id=item_id, text=text, voice="narrator", manifest="news.jsonl", line=3)
    tokens = normalize_script(text)
    synthesis = SynthesisRecord(
        item_id=item_id,
        status=ItemStatus.SYNTHESIZED,
        backend="espeak",
        audio_key=f"out/{item_id}.wav",
        sample_rate=22050,
        audio_seconds=4.0,
        attempts=2,
        asr_wer=0.05,
        tokens=tokens,
    )
    words = words_for(text, untimed, scores)
    timing = TimingRecord(
        item_id=item_id,
        status=ItemStatus.DONE,
        method=method,
        fallback_reason=fallback,
        attempted=["pocketsphinx", method],
        words=words,
    )
    return item, synthesis, timing, segment_cues(words)


OUTPUTS = {kind: f"out/x.{kind}" for kind in ("audio", "srt", "vtt", "ass", "json", "csv")}


def test_item_row_collects_the_figures():
    item, synthesis, timing, cues = records(
        "news-1", "The harbour was quiet. Nobody came.", untimed=(2,), scores={0: 0.2, 1: 0.95}
    )
    row = item_row(item, synthesis, timing, cues, OUTPUTS, low_confidence_below=0.5)
    assert (row.item_id, row.manifest, row.line, row.voice, row.language) == (
        "news-1",
        "news.jsonl",
        3,
        "narrator",
        "en",
    )
    assert row.characters == len(item.text) and row.words == 6
    assert row.words_per_minute == 90.0  # 6 words in 4 s
    assert (row.synthesizer, row.synthesis_attempts, row.asr_wer) == ("espeak", 2, 0.05)
    assert row.timing_method == "pocketsphinx" and row.untimed_words == 1
    assert row.min_word_score == 0.2 and row.low_confidence_words == 1
    assert row.mean_word_score == pytest.approx((0.2 + 0.95 + 0.9 * 3) / 5)
    assert row.cues == len(cues) and row.status == "done" and row.error is None
    assert row.srt_key == "out/x.srt" and row.audio_key == "out/x.audio"
    with pytest.raises(ValueError, match="unknown output kinds"):
        item_row(item, synthesis, timing, cues, {"flac": "x"})


def test_failed_item_row_takes_status_and_error_from_the_last_record():
    item = ItemSpec(item_id="bad-1", text="Hello.", voice="narrator", manifest="m.txt", line=7)
    synthesis = SynthesisRecord(
        item_id="bad-1", status=ItemStatus.SYNTHESIS_FAILED, backend="f5tts", error="CUDA out of memory"
    )
    row = item_row(item, synthesis)
    assert row.status == "synthesis_failed" and row.error == "CUDA out of memory"
    assert row.timing_method is None and row.cues is None and row.words_per_minute is None
    assert item_row(item, synthesis, status="failed", error="gave up").status == "failed"


def test_quarantined_line_is_a_row_with_file_line_field_reason():
    row = quarantine_row(
        LineError(manifest="news.jsonl", line=12, field="voice", reason="unknown voice 'bob'")
    )
    assert row.status == "quarantined" and row.item_id is None
    assert row.error == "news.jsonl:12: voice: unknown voice 'bob'"
    whole_file = quarantine_row(LineError(manifest="big.csv", line=0, reason="file larger than 20 MiB"))
    assert whole_file.error == "big.csv:0: file larger than 20 MiB"


def sample_rows() -> list[ItemReportRow]:
    a = item_row(*records("news-1", "The harbour was quiet. Nobody came.", untimed=(2,)), OUTPUTS)
    fast = records("news-2", "Extraordinary circumstances demand extraordinary measures right now.")
    fast_cues = [c.model_copy(update={"violations": ["cps", "min_gap"]}) for c in fast[3]]
    b = item_row(*fast[:3], fast_cues, OUTPUTS)
    c = item_row(*records("news-3", "Fine.", method="google", fallback="mean score below floor"), OUTPUTS)
    q = quarantine_row(LineError(manifest="news.jsonl", line=9, field="text", reason="empty"))
    return [a, b, c, q]


def test_report_csv_reads_back_with_every_row_and_column():
    rows = sample_rows()
    frame = pd.read_csv(io.StringIO(report_csv(rows)), keep_default_na=False, dtype=str)
    assert list(frame.columns) == list(ItemReportRow.model_fields)
    assert len(frame) == 4
    assert frame.loc[0, "line"] == "3" and frame.loc[0, "untimed_words"] == "1"  # integers stay integers
    assert frame.loc[1, "cue_rule_violations"] == f"cps={rows[1].cues};min_gap={rows[1].cues}"
    assert frame.loc[2, "fallback_reason"] == "mean score below floor"
    assert frame.loc[3, "status"] == "quarantined" and frame.loc[3, "error"] == "news.jsonl:9: text: empty"
    assert frame.loc[3, "cues"] == "" and frame.loc[3, "item_id"] == ""


def test_summary_totals():
    rows = sample_rows()
    summary = summarize(rows)
    assert summary["items"] == 4
    assert summary["by_status"] == {"done": 3, "quarantined": 1}
    assert summary["by_timing_method"] == {"pocketsphinx": 2, "google": 1}
    assert summary["fallbacks"] == 1 and summary["fallback_reasons"] == {"mean score below floor": 1}
    assert summary["untimed_words"] == 1
    assert summary["cue_rule_violations"] == {"cps": rows[1].cues, "min_gap": rows[1].cues}
    assert summary["cues"] == sum(r.cues or 0 for r in rows)
    assert summary["audio_seconds"] == 12.0
    assert summarize([])["items"] == 0


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.data: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.data.append(data)


def test_html_page_has_player_waveform_cues_and_table():
    rate = 8000
    item, synthesis, timing, cues = records("news-1", "The harbour was quiet. Nobody came.", untimed=(2,))
    samples = np.zeros(rate * 4, dtype=np.float32)
    samples[rate * 2 :] = 0.8 * np.sin(np.arange(rate * 2) / 5.0)  # silent first half, loud second half
    media = {
        "news-1": ItemMedia(
            audio_url="https://s3.local/out/news-1.wav?X-Amz-Signature=ab&x=1",
            samples=samples,
            sample_rate=rate,
            words=timing.words,
            cues=cues,
        )
    }
    rows = [item_row(item, synthesis, timing, cues, OUTPUTS)]
    page = report_html(rows, media, title="Batch 7")
    parser = _Collector()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert page.startswith("<!DOCTYPE html>") and tags.count("audio") == 1
    assert [a.get("class") for t, a in parser.tags if t == "svg"].count("wave") == 1
    audio = next(a for t, a in parser.tags if t == "audio")
    assert audio["src"] == "https://s3.local/out/news-1.wav?X-Amz-Signature=ab&x=1"
    assert 'src="https://s3.local/out/news-1.wav?X-Amz-Signature=ab&amp;x=1"' in page
    # Self-contained: nothing fetched but the audio.
    assert not [a for t, a in parser.tags if t in ("script", "link", "img") and ("src" in a or "href" in a)]
    # One boundary per word, at the word's start; the untimed one drawn as such.
    wave = _Collector()
    wave.feed(page[page.index('<svg xmlns="http://www.w3.org/2000/svg" class="wave"'):])
    lines = [a for t, a in wave.tags if t == "line"]
    assert len(lines) == len(timing.words)
    first_x = float(lines[0]["x1"])
    assert first_x == pytest.approx(900 * timing.words[0].start_ms / 4000, abs=0.1)
    assert sum(1 for t, a in wave.tags if t == "g" and "untimed" in a.get("class", "")) == 1
    # The envelope is flat where the audio is silent and tall where it is loud.
    points = next(a for t, a in wave.tags if t == "polygon")["points"].split()
    tops = [float(p.split(",")[1]) for p in points[: len(points) // 2]]
    assert max(tops[: len(tops) // 2 - 2]) == pytest.approx(60.0) and min(tops[len(tops) // 2 + 2 :]) < 20
    # The cue preview and the table.
    assert "The harbour was quiet." in " ".join(parser.data)
    assert "news-1" in " ".join(parser.data)
    # The untimed word is the only problem; then the item table.
    assert [a.get("class") for t, a in parser.tags if t == "table"] == ["problems low-confidence", "report sortable"]


def test_html_escapes_everything_it_shows():
    hostile = '<script>alert("x")</script>'
    words = [
        WordTiming(index=0, text=hostile, spoken="alert", start_ms=0, end_ms=900, source="t"),
        WordTiming(index=1, text="&amp;", spoken="and", start_ms=950, end_ms=1200, source="t"),
    ]
    cues = segment_cues(words)
    item = ItemSpec(item_id=hostile, text=hostile, voice="narrator", manifest="m.txt", line=1)
    rows = [
        item_row(item, None, None, cues, status="failed", error='boom "<b>"'),
        quarantine_row(LineError(manifest="<m>.txt", line=2, field="text", reason="<img src=x onerror=1>")),
    ]
    media = {hostile: ItemMedia(audio_url='javascript:"><script>bad()</script>', words=words, cues=cues)}
    page = report_html(rows, media, title="<Batch>")
    assert page.count("<script>") == 1  # only the page's own seek-on-click script
    assert "<img" not in page and "<b>" not in page and "<Batch>" not in page
    assert "&lt;script&gt;alert(" in page
    assert "&amp;amp;" in page  # the literal text "&amp;" is shown as such
    parser = _Collector()
    parser.feed(page)
    audio = next(a for t, a in parser.tags if t == "audio")
    assert audio["src"] == 'javascript:"><script>bad()</script>'  # one attribute value, not markup
    text = " ".join(parser.data)
    assert hostile in text and "<img src=x onerror=1>" in text


def test_waveform_without_audio_still_draws_the_words():
    words = words_for("Only words here.")
    svg = waveform_svg(None, None, words, width=300, height=50)
    assert svg.count("<line") == 3 and "<polygon" not in svg
    xs = [float(x) for x in re.findall(r'<line x1="([\d.]+)"', svg)]
    assert xs == sorted(xs) and xs[0] > 0


def test_html_leads_with_problems_then_a_compact_table_with_links():
    rows = sample_rows()
    failed = item_row(ItemSpec(item_id="bad-1", text="Hello.", voice="narrator", manifest="m.txt", line=7),
                      status="failed", error="CUDA out of memory")
    rows.insert(3, failed)
    quarantine = [LineError(manifest="news.jsonl", line=9, field="text", reason="empty")]
    links = {"news-1": {"audio": "https://s3.local/a.wav?sig=1&x=2", "srt": "https://s3.local/a.srt?sig=2"}}
    page = report_html(rows, links=links, quarantine=quarantine, cps_limit=17)
    order = [page.index(f'<section id="{s}">') for s in ("totals", "problems", "plots", "items")]
    assert order == sorted(order)
    parser = _Collector()
    parser.feed(page[page.index('<section id="problems">'):page.index('<section id="plots">')])
    problem_text = " | ".join(d.strip() for d in parser.data if d.strip())
    assert "news.jsonl | 9 | text | empty" in problem_text  # manifest, line, field, reason
    assert "bad-1 | m.txt:7 | failed | CUDA out of memory" in problem_text
    assert "news-3 | timing by google | mean score below floor" in problem_text
    assert "cps" in problem_text and "min_gap" in problem_text and "news-2" in problem_text
    # The item table: status and error first, blank (never None/<NA>/nan) cells, a link per deliverable.
    items = page[page.index('<section id="items">'):]
    table = _Collector()
    table.feed(items)
    headings = [d for d in table.data if d.strip()][2:4]
    assert headings == ["Status", "Error"]
    assert not re.search(r">(None|&lt;NA&gt;|nan)<", items)
    hrefs = [a["href"] for t, a in table.tags if t == "a"]
    assert hrefs == ["https://s3.local/a.wav?sig=1&x=2", "https://s3.local/a.srt?sig=2"]
    # The reading-speed plot marks the profile's limit.
    plots = _Collector()
    plots.feed(page[page.index('<section id="plots">'):page.index('<section id="items">')])
    assert [t for t, _ in plots.tags].count("svg") == 4
    assert sum(1 for t, a in plots.tags if t == "line" and a.get("class") == "limit") == 1
    assert "limit 17 cps" in " ".join(plots.data)


def test_a_long_programmes_cue_list_starts_folded_and_keeps_every_cue():
    story = " ".join(f"Sentence {n} of the long programme ends here." for n in range(300))
    words = words_for(story)
    cues = segment_cues(words)
    assert len(cues) > MAX_OPEN_CUES
    item = ItemSpec(item_id="story", text=story, voice="narrator", manifest="m.txt", line=1)
    row = item_row(item, None, None, cues, status="done")
    short_words = words_for("Only a few words.")
    short_item = ItemSpec(item_id="short", text="Only a few words.", voice="narrator", manifest="m.txt", line=2)
    page = report_html([row, item_row(short_item, None, None, segment_cues(short_words), status="done")],
                       {"story": ItemMedia(words=words, cues=cues),
                        "short": ItemMedia(words=short_words, cues=segment_cues(short_words))})

    story_section = page[page.index('id="item-story"'):page.index('id="item-short"')]
    flagged = sum(1 for cue in cues if cue.violations)
    assert f"<summary>{len(cues):,} cues ({flagged:,} breaking the profile): show them</summary>" in story_section
    assert story_section.count("<li data-start=") == len(cues)  # folded, not cut
    short_section = page[page.index('id="item-short"'):]
    assert "<details" not in short_section and short_section.count("<li data-start=") == 1


def test_a_long_items_row_and_section_name_its_segments_chapters_and_lexicon_entries():
    from narration.schema import Chapter, SegmentSpan

    item, synthesis, timing, cues = records("story", "The harbour was quiet. Mr. Nguyen counted the boats.")
    item = item.model_copy(update={"paragraphs": [4], "chapters": [Chapter(title="Morning", paragraph=1),
                                                                   Chapter(title="Boats", paragraph=2)]})
    spans = [SegmentSpan(index=n, first_token=4 * n, end_token=4 * n + 4, start_ms=2000 * n, end_ms=2000 * n + 1500,
                         start_frame=44100 * n, frames=33075, paragraph=n + 1, chapter=n,
                         audio_key=f"out/segments/{n}.wav") for n in range(2)]
    notes = ["Nguyen: alias 'win' (harbour)", "SQL: alias 'sequel' (harbour)"]
    synthesis = synthesis.model_copy(update={"segments": spans, "params": {"lexicon_entries": notes}})
    row = item_row(item, synthesis, timing, cues, OUTPUTS)
    short = item_row(*records("short", "Only a few words."), OUTPUTS)
    assert (row.segments, row.chapters, row.lexicon_entries) == (2, 2, "; ".join(notes))
    assert (short.segments, short.chapters, short.lexicon_entries) == (None, None, None)

    frame = pd.read_csv(io.StringIO(report_csv([row, short])), keep_default_na=False)
    assert list(frame["segments"]) == ["2", ""] and frame.loc[0, "lexicon_entries"] == "; ".join(notes)
    page = report_html([row, short], {"story": ItemMedia(words=timing.words, cues=cues)})
    assert ("<p class=\"about\">one programme of 2 segments, 2 chapters · lexicon entries: Nguyen: alias "
            "&#x27;win&#x27; (harbour); SQL: alias &#x27;sequel&#x27; (harbour)</p>") in page
    assert page.count('<p class="about">') == 1  # the short item has nothing to say
