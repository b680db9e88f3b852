"""Subtitle and word-timing writers: karaoke timing that never drifts, WebVTT inline timestamps inside their
cues, escaping, the word JSON/CSV exports, and ffmpeg (with libass) as the real client that parses and renders
what we write."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pysubs2
import pytest

from narration.normalize import normalize_script
from narration.schema import Cue, WordTiming
from narration.subtitles import AssStyle, segment_cues, to_ass, to_srt, to_vtt, to_words_csv, to_words_json

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(
    not (FFMPEG and FFPROBE),
    reason="ffmpeg/ffprobe not installed (apt-get install -y ffmpeg); CI installs it",
)

SCRIPT = (
    "Yesterday John Smith walked to the old harbour with his sister, and they watched the boats come in. "
    "It was cold. The wind cost them $1,250.50 in repairs, but nobody wanted to leave before the last ship "
    "had docked at the pier."
)


def speak(text: str, start_ms: int = 230, untimed: frozenset[int] = frozenset()) -> list[WordTiming]:
    """Word timings with awkward millisecond values (rounding to centiseconds is never exact)."""
    words, t = [], start_ms
    for token in normalize_script(text):
        spoken = " ".join(token.spoken)
        duration = 57 * len(spoken) + 33
        timed = token.index not in untimed
        words.append(WordTiming.of(token, t if timed else None, t + duration if timed else None,
                                   0.87 if timed else None, source="test"))
        t += duration + (437 if token.original.endswith(".") else 47)
    return words


def karaoke_syllables(event_text: str) -> list[tuple[str, int, str]]:
    """(tag, centiseconds, text after it) for each \\k/\\kf syllable of an ASS event."""
    return [
        (m.group(1), int(m.group(2)), m.group(3))
        for m in re.finditer(r"\{\\(kf|k)(\d+)\}([^{]*)", event_text)
    ]


def vtt_cue_blocks(vtt: str) -> list[tuple[int, int, str]]:
    """(start_ms, end_ms, payload) per cue of a WebVTT text."""
    stamp = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"
    blocks = []
    for m in re.finditer(rf"{stamp} --> {stamp}\n(.*?)(?:\n\n|\Z)", vtt, re.DOTALL):
        g = [int(x) for x in m.groups()[:8]]
        blocks.append(
            (
                ((g[0] * 60 + g[1]) * 60 + g[2]) * 1000 + g[3],
                ((g[4] * 60 + g[5]) * 60 + g[6]) * 1000 + g[7],
                m.group(9),
            )
        )
    return blocks


def to_ms(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


# ----------------------------------------------------------------------------------------------------------
# ASS karaoke


def test_karaoke_durations_add_up_to_each_cue_span():
    words = speak(SCRIPT)
    cues = segment_cues(words)
    subs = pysubs2.SSAFile.from_string(to_ass(cues, words))
    assert len(subs.events) == len(cues)
    for cue, event in zip(cues, subs.events):
        total_cs = sum(cs for _, cs, _ in karaoke_syllables(event.text))
        assert total_cs * 10 == event.end - event.start  # exactly the span the renderer sees
        assert abs(total_cs * 10 - (cue.end_ms - cue.start_ms)) <= 10
        sung = [
            text.replace("\\N", " ").strip() for tag, _, text in karaoke_syllables(event.text) if tag == "kf"
        ]
        assert sung == [w.text for w in words if w.index in cue.word_indexes]


def test_karaoke_never_drifts_over_a_hundred_words():
    text = " ".join(f"word{k}" + ("." if k % 9 == 8 else "") for k in range(100))
    words = speak(text)
    cues = segment_cues(words)
    subs = pysubs2.SSAFile.from_string(to_ass(cues, words))
    starts = {w.text: w.start_ms for w in words}
    checked = 0
    for event in subs.events:
        clock_cs = event.start // 10
        for tag, cs, syllable in karaoke_syllables(event.text):
            if tag == "kf":
                word = syllable.replace("\\N", "").strip()
                assert abs(clock_cs * 10 - starts[word]) <= 10, (word, clock_cs * 10, starts[word])
                checked += 1
            clock_cs += cs
    assert checked == 100


def test_karaoke_places_untimed_words_between_neighbours():
    words = speak(SCRIPT, untimed=frozenset({3, 12}))
    cues = segment_cues(words)
    subs = pysubs2.SSAFile.from_string(to_ass(cues, words))
    text = " ".join(event.text for event in subs.events)
    assert "{\\kf" in text and "}walked" in text and "}watched" in text
    for cue, event in zip(cues, subs.events):
        assert sum(cs for _, cs, _ in karaoke_syllables(event.text)) * 10 == event.end - event.start


def test_ass_style_options_reach_the_file():
    words = speak("Hello there.")
    cues = segment_cues(words)
    style = AssStyle(
        font_name="DejaVu Sans",
        font_size=40,
        highlight_color="#00FF00",
        base_color="#FFFFFF",
        play_res_x=1280,
        play_res_y=720,
        margin_v=30,
    )
    subs = pysubs2.SSAFile.from_string(to_ass(cues, words, style=style))
    default = subs.styles["Default"]
    assert default.fontname == "DejaVu Sans" and default.fontsize == 40 and default.marginv == 30
    assert (default.primarycolor.r, default.primarycolor.g, default.primarycolor.b) == (0, 255, 0)
    assert subs.info["PlayResX"] == "1280" and subs.info["PlayResY"] == "720"
    plain = pysubs2.SSAFile.from_string(to_ass(cues, style=style, karaoke=False))
    assert plain.events[0].text == "Hello there."
    with pytest.raises(ValueError):
        AssStyle(base_color="white")
    with pytest.raises(ValueError):
        to_ass(cues)  # karaoke without words


def test_ass_escapes_braces_and_backslashes():
    words = [WordTiming(index=0, text="{\\b1}bold?", spoken="bold", start_ms=0, end_ms=900, source="t")]
    cues = segment_cues(words)
    event = pysubs2.SSAFile.from_string(to_ass(cues, words)).events[0]
    assert "\\{" in event.text and "{\\b1}" not in event.text


# ----------------------------------------------------------------------------------------------------------
# WebVTT and SRT


def test_vtt_inline_timestamps_are_monotonic_and_inside_their_cue():
    words = speak(SCRIPT, untimed=frozenset({5}))
    cues = segment_cues(words)
    blocks = vtt_cue_blocks(to_vtt(cues, words, inline_word_timestamps=True))
    assert len(blocks) == len(cues)
    starts = {w.index: w.start_ms for w in words}
    for cue, (start, end, payload) in zip(cues, blocks):
        assert (start, end) == (cue.start_ms, cue.end_ms)
        stamps = [to_ms(*m.groups()) for m in re.finditer(r"<(\d\d):(\d\d):(\d\d)\.(\d\d\d)>", payload)]
        assert len(stamps) == len(cue.word_indexes) - 1  # before each word after the first
        assert all(start < s < end for s in stamps)
        assert stamps == sorted(set(stamps))
        for index, stamp in zip(cue.word_indexes[1:], stamps):
            if starts[index] is not None and start < starts[index] < end:
                assert stamp == starts[index]
        assert len(payload.split("\n")) == len(cue.lines)
        assert re.sub(r"<[^>]+>", "", payload).split("\n") == cue.lines


def test_vtt_without_timestamps_and_escaping():
    words = [
        WordTiming(index=0, text="Fish", spoken="fish", start_ms=0, end_ms=400, source="t"),
        WordTiming(index=1, text="&", spoken="and", start_ms=450, end_ms=600, source="t"),
        WordTiming(index=2, text="<chips>.", spoken="chips", start_ms=650, end_ms=1200, source="t"),
    ]
    cues = segment_cues(words)
    plain = to_vtt(cues)
    assert plain.startswith("WEBVTT")
    assert "Fish &amp; &lt;chips&gt;." in plain and "<chips>" not in plain
    karaoke = to_vtt(cues, words, inline_word_timestamps=True)
    assert "&amp; <00:00:00.650>&lt;chips&gt;." in karaoke
    with pytest.raises(ValueError):
        to_vtt(cues, inline_word_timestamps=True)


def test_vtt_cue_too_short_for_its_words_gets_only_the_timestamps_that_fit():
    words = [
        WordTiming(index=k, text=f"w{k}", spoken="w", start_ms=1000, end_ms=1000, source="t")
        for k in range(5)
    ]
    cue = Cue(index=1, start_ms=1000, end_ms=1003, lines=["w0 w1 w2 w3 w4"], word_indexes=list(range(5)))
    ((_start, _end, payload),) = vtt_cue_blocks(to_vtt([cue], words, inline_word_timestamps=True))
    stamps = [to_ms(*m.groups()) for m in re.finditer(r"<(\d\d):(\d\d):(\d\d)\.(\d\d\d)>", payload)]
    assert stamps == [1001, 1002]
    assert re.sub(r"<[^>]+>", "", payload) == "w0 w1 w2 w3 w4"


def test_srt_round_trips_through_pysubs2():
    words = speak(SCRIPT)
    cues = segment_cues(words)
    srt = to_srt(cues)
    assert srt.startswith("1\n")
    parsed = pysubs2.SSAFile.from_string(srt)
    assert [(e.start, e.end) for e in parsed] == [(c.start_ms, c.end_ms) for c in cues]
    assert [e.text.split("\\N") for e in parsed] == [c.lines for c in cues]


# ----------------------------------------------------------------------------------------------------------
# Word exports


def test_words_json_has_words_cues_and_metadata():
    words = speak(SCRIPT, untimed=frozenset({2}))
    cues = segment_cues(words)
    metadata = {
        "method": "pocketsphinx",
        "language": "en",
        "model": "en-us",
        "profile": "netflix-adult",
        "item_id": "news-00001",
    }
    document = json.loads(to_words_json(words, cues, metadata))
    assert document["metadata"] == metadata
    assert len(document["words"]) == len(words) and len(document["cues"]) == len(cues)
    assert document["words"][2]["timed"] is False and document["words"][2]["start_ms"] is None
    assert document["words"][0]["timed"] is True and document["words"][0]["text"] == "Yesterday"
    assert [Cue.model_validate(c) for c in document["cues"]] == cues
    with pytest.raises(ValueError, match="model, profile"):
        to_words_json(words, cues, {"method": "x", "language": "en"})


def test_words_csv_columns_and_empty_cells_for_untimed_words():
    words = speak(SCRIPT, untimed=frozenset({2}))
    text = to_words_csv(words)
    assert text.splitlines()[0] == "index,text,spoken,start_ms,end_ms,score,source,timed"
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str)
    assert len(frame) == len(words)
    assert frame.loc[2, "start_ms"] == "" and frame.loc[2, "timed"] == "False"
    assert frame.loc[0, "start_ms"] == str(words[0].start_ms)  # integers, not 230.0
    assert "$1,250.50" in set(frame["text"])
    assert frame.loc[frame["text"] == "$1,250.50", "spoken"].item().startswith("one thousand two hundred")


# ----------------------------------------------------------------------------------------------------------
# ffmpeg as the client


def ffprobe_packets(path) -> list[tuple[int, int]]:
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "packet=pts_time,duration_time", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [
        (round(float(p["pts_time"]) * 1000), round(float(p["duration_time"]) * 1000))
        for p in json.loads(out)["packets"]
    ]


@needs_ffmpeg
@pytest.mark.parametrize("kind", ["srt", "vtt", "vtt-karaoke", "ass"])
def test_ffmpeg_parses_every_cue(tmp_path, kind):
    words = speak(SCRIPT)
    cues = segment_cues(words)
    text = {
        "srt": lambda: to_srt(cues),
        "vtt": lambda: to_vtt(cues),
        "vtt-karaoke": lambda: to_vtt(cues, words, inline_word_timestamps=True),
        "ass": lambda: to_ass(cues, words),
    }[kind]()
    path = tmp_path / f"subs.{kind.split('-')[0]}"
    path.write_text(text, encoding="utf-8")
    packets = ffprobe_packets(path)
    tolerance = 10 if kind == "ass" else 0  # ASS stores centiseconds
    assert len(packets) == len(cues)
    for (start, duration), cue in zip(packets, cues):
        assert abs(start - cue.start_ms) <= tolerance
        assert abs(start + duration - cue.end_ms) <= tolerance
    converted = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "warning", "-i", str(path), "-f", "ass", "-"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert converted.stderr == ""
    assert "John Smith walked" in re.sub(r"\{[^}]*\}", "", converted.stdout)


@needs_ffmpeg
def test_ffmpeg_reads_escaped_vtt_text_literally(tmp_path):
    words = [
        WordTiming(index=0, text="Fish", spoken="fish", start_ms=0, end_ms=400, source="t"),
        WordTiming(index=1, text="&", spoken="and", start_ms=450, end_ms=600, source="t"),
        WordTiming(index=2, text="<chips>.", spoken="chips", start_ms=650, end_ms=1200, source="t"),
    ]
    path = tmp_path / "subs.vtt"
    path.write_text(to_vtt(segment_cues(words), words, inline_word_timestamps=True), encoding="utf-8")
    converted = subprocess.run(
        [FFMPEG, "-nostdin", "-v", "warning", "-i", str(path), "-f", "ass", "-"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "Fish & <chips>." in converted.stdout


def render_frame(ass_path, at_s: float, size=(640, 360), fps=25) -> tuple[np.ndarray, str]:
    """Burn the ASS onto a blank video with libass; the RGB frame at ``at_s`` and ffmpeg's warnings."""
    width, height = size
    done = subprocess.run(
        [
            FFMPEG,
            "-nostdin",
            "-v",
            "warning",
            "-f",
            "lavfi",
            "-i",
            f"color=c=black:s={width}x{height}:r={fps}:d=30",
            "-vf",
            f"ass={ass_path},select=eq(n\\,{round(at_s * fps)})",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        check=True,
        capture_output=True,
    )
    return np.frombuffer(done.stdout, dtype=np.uint8).reshape(height, width, 3).astype(
        int
    ), done.stderr.decode()


def highlighted_and_base_pixels(frame: np.ndarray) -> tuple[int, int]:
    yellow = (
        (frame[..., 0] > 200) & (frame[..., 1] > 170) & (frame[..., 2] < 120)
    )  # default highlight #FFD23F
    white = (frame > 200).all(axis=-1)
    return int(yellow.sum()), int(white.sum())


@needs_ffmpeg
def test_ffmpeg_renders_the_karaoke_onto_video(tmp_path):
    words = speak(SCRIPT)
    cues = segment_cues(words)
    path = tmp_path / "subs.ass"
    path.write_text(to_ass(cues, words), encoding="utf-8")
    whole = subprocess.run(
        [
            FFMPEG,
            "-nostdin",
            "-v",
            "warning",
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=640x360:r=25:d=5",
            "-vf",
            f"ass={path}",
            "-f",
            "null",
            "-",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert whole.returncode == 0 and whole.stderr == ""

    first = cues[0]
    before, _ = render_frame(path, first.start_ms / 1000 - 0.12)
    assert before.max() == 0  # nothing on screen before the cue
    middle, warnings = render_frame(path, (first.start_ms + first.end_ms) / 2000)
    assert warnings == ""
    yellow, white = highlighted_and_base_pixels(middle)
    assert yellow > 50 and white > 50  # half sung: both colours on screen
    # A cue that stays up after its last word: everything is highlighted then.
    ending = {cue.word_indexes[-1]: cue for cue in cues}
    last_word, lingering = next(
        (w, ending[w.index]) for w in words if w.index in ending and ending[w.index].end_ms - w.end_ms >= 100
    )
    sung, _ = render_frame(path, (last_word.end_ms + lingering.end_ms) / 2000)
    yellow, white = highlighted_and_base_pixels(sung)
    assert yellow > 50 and white == 0  # every word highlighted once the last one is spoken


@needs_ffmpeg
def test_ffmpeg_renders_escaped_braces_as_text(tmp_path):
    words = [WordTiming(index=0, text="{hidden}", spoken="hidden", start_ms=0, end_ms=1500, source="t")]
    path = tmp_path / "subs.ass"
    path.write_text(to_ass(segment_cues(words), karaoke=False), encoding="utf-8")
    frame, warnings = render_frame(path, 0.8)
    assert warnings == "" and frame.max() > 0  # unescaped, libass would read it as an override tag


def test_cues_without_words_keep_their_text_in_every_format():
    cue = Cue(index=1, start_ms=500, end_ms=2000, lines=["[music]", "<applause>"])
    assert "[music]\n<applause>" in to_srt([cue])
    assert "[music]\n&lt;applause&gt;" in to_vtt([cue], [], inline_word_timestamps=True)
    event = pysubs2.SSAFile.from_string(to_ass([cue], [])).events[0]
    assert event.text == "[music]\\N<applause>"


# ----------------------------------------------------------------------------------------------------------
# The registry: one declaration per format, everything else follows from it


def test_every_registered_format_writes_its_file_from_one_document():
    from narration.layout import BatchLayout
    from narration.storage import CONTENT_TYPES
    from narration.subtitles import get_profile
    from narration.subtitles.formats import FORMATS
    from narration.subtitles.formats.base import SubtitleDocument

    words = speak(SCRIPT)
    cues = segment_cues(words)
    document = SubtitleDocument(cues=cues, words=words, language="en-gb", profile=get_profile(), metadata={
        "method": "pocketsphinx", "language": "en", "model": "en-us", "profile": "netflix-adult"})
    texts = {name: fmt.write(document) for name, fmt in FORMATS.items()}
    assert texts["srt"] == to_srt(cues) and texts["ass"] == to_ass(cues, words)
    assert texts["vtt"] == to_vtt(cues, words) and 'xml:lang="en-gb"' in texts["ttml"]
    assert json.loads(texts["json"])["metadata"]["model"] == "en-us"
    assert texts["csv"] == to_words_csv(words)
    layout = BatchLayout("b")
    for name, fmt in FORMATS.items():
        assert layout.subtitle("i", name) == layout.item_prefix("i") + fmt.file_name
        assert CONTENT_TYPES[fmt.suffix] == fmt.content_type


def test_vtt_word_timestamps_are_a_document_option():
    from narration.subtitles.formats import get_format
    from narration.subtitles.formats.base import SubtitleDocument

    words = speak(SCRIPT)
    cues = segment_cues(words)
    karaoke = get_format("vtt").write(SubtitleDocument(cues=cues, words=words, vtt_word_timestamps=True))
    assert karaoke == to_vtt(cues, words, inline_word_timestamps=True) != to_vtt(cues, words)


def test_an_unknown_format_is_named_with_the_valid_ones():
    from narration.subtitles.formats import UnknownFormatError, check_formats, get_format

    with pytest.raises(UnknownFormatError, match="unknown output format 'mp4'; valid formats: srt, vtt, ass, ttml"):
        get_format("mp4")
    assert check_formats(["srt", "json"]) == ["srt", "json"]
    with pytest.raises(UnknownFormatError, match="'sbv'"):
        check_formats(["srt", "sbv"])
    from pydantic import ValidationError

    from narration.plan import BatchOptions

    with pytest.raises(ValidationError, match="unknown output format 'mp4'; valid formats: srt, vtt"):
        BatchOptions(formats=["srt", "mp4"])
