"""Frame-accurate subtitles through the real pipeline (espeak-ng, pocketsphinx, the render step): every written
format (SRT and WebVTT in ms, ASS in centiseconds, TTML read by ttconv, an independent IMSC reader) carries the
same frame-snapped times and breaks exactly the rules segmentation recorded, at every supported frame rate."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from fractions import Fraction

import pysubs2
import pytest
import ttconv.imsc.reader as imsc_reader
from ttconv import model as tt_model

from bench.rules import PROFILE_RULES, cue_violations
from narration.layout import BatchLayout
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.render import render_chunk
from narration.schema import Cue
from narration.settings import Settings
from narration.subtitles import get_profile, to_ass, to_srt, to_ttml, to_vtt
from narration.subtitles.profile import FRAME_RATES
from tests.dag_runs import jsonl

LINES = [
    {"id": "short", "text": "Yes."},
    {"id": "news", "text": "The council approved the budget for the new library on Monday evening. Work starts "
                           "in the spring, and the doors open to readers in the autumn of next year."},
    {"id": "fast", "text": "Prices, wages, rents, fares and taxes all rose again this quarter.", "speed": 1.6},
]
FORMATS = ["srt", "vtt", "ass", "ttml", "json"]


def cues_from_pysubs2(text: str, fmt: str) -> list[Cue]:
    subs = pysubs2.SSAFile.from_string(text, format_=fmt)
    return [Cue(index=n, start_ms=e.start, end_ms=e.end, lines=e.plaintext.split("\n")) for n, e in enumerate(subs, 1)]


def _text_of(element) -> str:
    parts = []
    for child in element:
        if isinstance(child, tt_model.Text):
            parts.append(child.get_text())
        elif isinstance(child, tt_model.Br):
            parts.append("\n")
        else:
            parts.append(_text_of(child))
    return "".join(parts)


def cues_from_ttml(text: str) -> list[Cue]:
    """Cues as ttconv's IMSC reader resolves them (times in exact seconds, relative to a zero-based body)."""
    document = imsc_reader.to_model(ET.ElementTree(ET.fromstring(text)))
    paragraphs = [p for div in document.get_body() for p in div]
    assert all(p.get_end() is not None for p in paragraphs), "a cue without an end"
    # ttconv leaves begin unset for a paragraph that begins with its parent (at 0)
    return [Cue(index=n, start_ms=int((p.get_begin() or 0) * 1000), end_ms=int(p.get_end() * 1000),
                lines=_text_of(p).split("\n")) for n, p in enumerate(paragraphs, 1)]


@pytest.fixture(scope="module")
def timed_batch(s3_server, narrator_wav, tmp_path_factory):
    """One synthesised and aligned batch; each test renders it at the frame rate it checks."""
    import os
    import uuid

    from narration.storage import Storage
    from narration.voices import upload_voice

    os.environ["NARRATION_BUCKET"] = f"t-{uuid.uuid4().hex[:12]}"
    storage = Storage.from_settings(Settings())
    storage.ensure_bucket()
    upload_voice(storage, "narrator", narrator_wav, "This is the narrator's reference voice for the tests.")
    storage.put_bytes("incoming/frames.jsonl", jsonl(*LINES))
    plan = plan_batch(storage, Settings(), "frames", ["incoming/frames.jsonl"], BatchOptions(), {"narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, Settings(), chunk)
    align_chunk(storage, Settings(), chunk)
    yield storage, chunk
    os.environ.pop("NARRATION_BUCKET", None)


@pytest.mark.parametrize("fps", list(FRAME_RATES))
def test_every_format_carries_the_same_frames_and_rules(timed_batch, fps, caplog):
    storage, chunk = timed_batch
    profile = get_profile("netflix-adult", fps=fps)
    result = render_chunk(storage, Settings(), chunk.model_copy(update={"formats": FORMATS, "subtitle_fps": fps}))
    assert {i.status.value for i in result.items} == {"done"}
    layout = BatchLayout(chunk.batch_id)
    for item in chunk.items:
        recorded = [Cue.model_validate(c) for c in storage.get_json(layout.subtitle(item.item_id, "json"))["cues"]]
        read = {fmt: cues_from_pysubs2(storage.get_text(layout.subtitle(item.item_id, fmt)), fmt)
                for fmt in ("srt", "vtt", "ass")}
        caplog.clear()  # only what the IMSC reader says counts here
        with caplog.at_level(logging.WARNING, logger="ttconv"):
            read["ttml"] = cues_from_ttml(storage.get_text(layout.subtitle(item.item_id, "ttml")))
        assert not caplog.records, [r.getMessage() for r in caplog.records]  # a clean IMSC document
        for fmt, cues in read.items():
            assert [(c.start_ms, c.end_ms) for c in cues] == [(c.start_ms, c.end_ms) for c in recorded], fmt
            assert [c.lines for c in cues] == [c.lines for c in recorded], fmt
            for cue in cues:  # on the frame grid: a player at this rate shows the frame the time names
                for ms in (cue.start_ms, cue.end_ms):
                    assert profile.frame_time_ms(profile.first_frame_from(ms)) == ms
        expected = [[r for r in c.violations if r in PROFILE_RULES] for c in recorded]
        for fmt, cues in read.items():
            judged = [[r for r in rules if r in PROFILE_RULES] for rules in cue_violations(cues, profile)]
            assert judged == expected, (fmt, item.item_id)


def test_the_short_cue_lasts_the_minimum_in_frames_in_every_format(timed_batch):
    storage, chunk = timed_batch
    layout = BatchLayout(chunk.batch_id)
    for fps, frames in ((23.976, 20), (24, 20), (25, 21), (29.97, 25), (30, 25)):
        render_chunk(storage, Settings(), chunk.model_copy(update={"formats": ["srt", "ass"], "subtitle_fps": fps}))
        profile = get_profile("netflix-adult", fps=fps)
        for fmt in ("srt", "ass"):
            [cue] = cues_from_pysubs2(storage.get_text(layout.subtitle("short", fmt)), fmt)
            assert profile.frames_shown(cue.start_ms, cue.end_ms) == frames, (fps, fmt)


def test_ass_centiseconds_keep_a_cue_at_its_limits():
    """A 20-frame cue at 24 fps (833.3 ms) and one exactly at the reading-speed limit: written on the 10 ms grid,
    ASS loses nothing SRT keeps (before, 833 ms became 830 ms in ASS only)."""
    profile = get_profile("netflix-adult", fps=24)
    start = profile.frame_time_ms(24)
    short = Cue(index=1, start_ms=start, end_ms=profile.frame_time_ms(44), lines=["Yes."])
    limit = Cue(index=2, start_ms=profile.frame_time_ms(60), end_ms=profile.frame_time_ms(108),
                lines=["Thirty four characters, all read."])  # 34 chars in 48 frames: exactly 17 a second
    assert Fraction(34) * profile.rate / 48 == 17
    cues = [short, limit]
    written = {"srt": to_srt(cues), "vtt": to_vtt(cues), "ass": to_ass(cues, karaoke=False)}
    for fmt, text in written.items():
        assert cue_violations(cues_from_pysubs2(text, fmt), profile) == [[], []], fmt
    assert cue_violations(cues_from_ttml(to_ttml(cues, "en", profile)), profile) == [[], []]


def test_ttml_declares_what_imsc_deliveries_need():
    profile = get_profile("netflix-adult", fps=29.97)
    text = to_ttml([Cue(index=1, start_ms=1001, end_ms=2002, lines=["Fish & <chips>", "tonight"])], "en-gb", profile)
    document = imsc_reader.to_model(ET.ElementTree(ET.fromstring(text)))
    assert document.get_lang() == "en-gb"
    root = ET.fromstring(text)
    assert root.get("{http://www.w3.org/ns/ttml#parameter}frameRate") == "30"
    assert root.get("{http://www.w3.org/ns/ttml#parameter}frameRateMultiplier") == "1000 1001"
    assert root.get("{http://www.w3.org/ns/ttml#parameter}contentProfiles").endswith("imsc1.1/text")
    assert [c.lines for c in cues_from_ttml(text)] == [["Fish & <chips>", "tonight"]]
