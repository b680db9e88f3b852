"""Subtitle and timing writers: SRT, WebVTT (optionally with karaoke timestamps), styled ASS with \\kf
karaoke, TTML (IMSC 1.1 text profile) and the word-level JSON/CSV exports. All read the shared schema (Cue,
WordTiming) and return text.

pysubs2 writes the SRT/VTT/ASS files; only what it cannot express (inline WebVTT timestamps, \\kf tags) is
built here as cue text. TTML is written here with ElementTree: pysubs2's TTML writer declares no language, frame
rate, content profile, root extent or region, which IMSC 1.1 deliveries (Netflix) require.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import pandas as pd
import pysubs2
from pydantic import BaseModel, ConfigDict, Field

from narration.schema import Cue, WordTiming
from narration.subtitles.profile import SubtitleProfile, get_profile
from narration.subtitles.segment import effective_spans

WORDS_CSV_COLUMNS = ["index", "text", "spoken", "start_ms", "end_ms", "score", "source", "timed"]
REQUIRED_METADATA = ("method", "language", "model", "profile")


def _subs_from_cues(cues: list[Cue], texts: list[str]) -> pysubs2.SSAFile:
    subs = pysubs2.SSAFile()
    for cue, text in zip(cues, texts):
        subs.append(pysubs2.SSAEvent(start=cue.start_ms, end=cue.end_ms, text=text))
    return subs


def _word_spans_in_cue(cue: Cue, spans: Mapping[int, tuple[int, int]]) -> list[tuple[int, int]]:
    """The cue's words' spans clipped into the cue and made monotonic (each start >= the previous end)."""
    result = []
    cursor = cue.start_ms
    for index in cue.word_indexes:
        start, end = spans[index]
        start = min(max(start, cursor), cue.end_ms)
        end = min(max(end, start), cue.end_ms)
        result.append((start, end))
        cursor = end
    return result


def _cue_tokens(cue: Cue, words_by_index: Mapping[int, WordTiming]) -> list[list[str]]:
    """The cue's word texts, grouped by line as laid out in ``cue.lines``."""
    tokens = [words_by_index[i].text for i in cue.word_indexes]
    grouped: list[list[str]] = []
    k = 0
    for line in cue.lines:
        group: list[str] = []
        while k < len(tokens) and len(" ".join([*group, tokens[k]])) <= len(line):
            group.append(tokens[k])
            k += 1
        grouped.append(group)
    if k < len(tokens):  # lines edited by hand: keep every word on the last line
        grouped[-1].extend(tokens[k:])
    return grouped


# ----------------------------------------------------------------------------------------------------------
# SRT


def to_srt(cues: list[Cue]) -> str:
    """SubRip text of the cues (lines as laid out)."""
    subs = _subs_from_cues(cues, [r"\N".join(cue.lines) for cue in cues])
    return subs.to_string("srt", keep_ssa_tags=True)


# ----------------------------------------------------------------------------------------------------------
# WebVTT


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_timestamp(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _vtt_karaoke_text(
    cue: Cue, words_by_index: Mapping[int, WordTiming], spans: Mapping[int, tuple[int, int]]
) -> str:
    """Cue text with a ``<hh:mm:ss.mmm>`` timestamp before every word after the first.

    WebVTT wants each timestamp strictly after the cue start and the previous timestamp and before the cue
    end; a word whose time cannot satisfy that (a cue shorter than its word count in ms) gets no timestamp.
    """
    if not cue.word_indexes:  # a cue made by hand without words: nothing to time
        return r"\N".join(_vtt_escape(line) for line in cue.lines)
    word_spans = _word_spans_in_cue(cue, spans)
    previous = cue.start_ms
    out_lines: list[str] = []
    position = 0
    for group in _cue_tokens(cue, words_by_index):
        parts = []
        for token in group:
            if position > 0:
                stamp = max(word_spans[position][0], previous + 1)
                if stamp < cue.end_ms:
                    parts.append(f"<{_vtt_timestamp(stamp)}>")
                    previous = stamp
            parts.append(_vtt_escape(token) + " ")
            position += 1
        out_lines.append("".join(parts).rstrip(" "))
    return r"\N".join(out_lines)


def to_vtt(
    cues: list[Cue], words: list[WordTiming] | None = None, inline_word_timestamps: bool = False
) -> str:
    """WebVTT text of the cues; with ``inline_word_timestamps`` (needs ``words``) each word after the first in
    a cue is preceded by its start time, for karaoke-style players."""
    if inline_word_timestamps:
        if words is None:
            raise ValueError("inline_word_timestamps needs the words")
        words_by_index = {w.index: w for w in words}
        spans = effective_spans(words)
        texts = [_vtt_karaoke_text(cue, words_by_index, spans) for cue in cues]
    else:
        texts = [r"\N".join(_vtt_escape(line) for line in cue.lines) for cue in cues]
    return _subs_from_cues(cues, texts).to_string("vtt", keep_ssa_tags=True)


# ----------------------------------------------------------------------------------------------------------
# ASS


class AssStyle(BaseModel):
    """Look of the ASS subtitles. Colours are ``#RRGGBB``; with karaoke, ``highlight_color`` sweeps over
    ``base_color`` word by word."""

    model_config = ConfigDict(extra="forbid")

    font_name: str = "Arial"
    font_size: int = Field(54, ge=1)
    base_color: str = Field("#FFFFFF", pattern=r"^#[0-9A-Fa-f]{6}$")
    highlight_color: str = Field("#FFD23F", pattern=r"^#[0-9A-Fa-f]{6}$")
    outline_color: str = Field("#000000", pattern=r"^#[0-9A-Fa-f]{6}$")
    shadow_color: str = Field("#000000", pattern=r"^#[0-9A-Fa-f]{6}$")
    bold: bool = False
    outline: float = Field(2.5, ge=0)
    shadow: float = Field(1.0, ge=0)
    margin_v: int = Field(60, ge=0)
    play_res_x: int = Field(1920, ge=1)
    play_res_y: int = Field(1080, ge=1)


def _color(hex_color: str) -> pysubs2.Color:
    return pysubs2.Color(int(hex_color[1:3], 16), int(hex_color[3:5], 16), int(hex_color[5:7], 16), 0)


def _centiseconds(ms: int) -> int:
    """ASS time in centiseconds, rounded as pysubs2 (and Aegisub) write event times."""
    return (max(ms, 0) + 5) // 10


def _ass_escape(text: str) -> str:
    # Braces would open an override block, a backslash a tag: show them, never interpret them.
    return text.replace("\\", "\u29f5").replace("{", "\\{").replace("}", "\\}")


def karaoke_durations(cue: Cue, spans: Mapping[int, tuple[int, int]]) -> list[tuple[int, int]]:
    """Per word of the cue, (gap before it, its duration) in centiseconds, plus a final (tail, 0).

    Computed from cumulative rounded times: every boundary is rounded once, so the durations add up to the
    cue's rounded span exactly and the highlight never drifts, however many words there are.
    """
    cursor = _centiseconds(cue.start_ms)
    cue_end = _centiseconds(cue.end_ms)
    result = []
    for start, end in _word_spans_in_cue(cue, spans):
        start_cs = min(max(_centiseconds(start), cursor), cue_end)
        end_cs = min(max(_centiseconds(end), start_cs), cue_end)
        result.append((start_cs - cursor, end_cs - start_cs))
        cursor = end_cs
    result.append((cue_end - cursor, 0))
    return result


def _ass_karaoke_text(
    cue: Cue, words_by_index: Mapping[int, WordTiming], spans: Mapping[int, tuple[int, int]]
) -> str:
    if not cue.word_indexes:  # a cue made by hand without words: nothing to sing
        return r"\N".join(_ass_escape(line) for line in cue.lines)
    durations = karaoke_durations(cue, spans)
    parts: list[str] = []
    position = 0
    groups = _cue_tokens(cue, words_by_index)
    for line_number, group in enumerate(groups):
        for k, token in enumerate(group):
            gap, duration = durations[position]
            if gap:
                parts.append(f"{{\\k{gap}}}")
            last_on_line = k == len(group) - 1
            separator = ("\\N" if line_number < len(groups) - 1 else "") if last_on_line else " "
            parts.append(f"{{\\kf{duration}}}{_ass_escape(token)}{separator}")
            position += 1
    tail, _ = durations[-1]
    if tail:
        parts.append(f"{{\\k{tail}}}")
    return "".join(parts)


def to_ass(
    cues: list[Cue],
    words: list[WordTiming] | None = None,
    style: AssStyle | None = None,
    karaoke: bool = True,
) -> str:
    """Styled Advanced SubStation Alpha text; with ``karaoke`` (needs ``words``) each word carries a ``\\kf``
    sweep from its time, gaps between words as empty ``\\k`` syllables."""
    style = style or AssStyle()
    if karaoke and words is None:
        raise ValueError("karaoke needs the words")
    if karaoke:
        words_by_index = {w.index: w for w in words}
        spans = effective_spans(words)
        texts = [_ass_karaoke_text(cue, words_by_index, spans) for cue in cues]
    else:
        texts = [r"\N".join(_ass_escape(line) for line in cue.lines) for cue in cues]
    subs = _subs_from_cues(cues, texts)
    subs.info.update(
        {"PlayResX": str(style.play_res_x), "PlayResY": str(style.play_res_y), "ScaledBorderAndShadow": "yes"}
    )
    subs.styles["Default"] = pysubs2.SSAStyle(
        fontname=style.font_name,
        fontsize=style.font_size,
        # \kf sweeps from SecondaryColour to PrimaryColour.
        primarycolor=_color(style.highlight_color if karaoke else style.base_color),
        secondarycolor=_color(style.base_color),
        outlinecolor=_color(style.outline_color),
        backcolor=_color(style.shadow_color),
        bold=style.bold,
        outline=style.outline,
        shadow=style.shadow,
        alignment=pysubs2.Alignment.BOTTOM_CENTER,
        marginv=style.margin_v,
    )
    return subs.to_string("ass")


# ----------------------------------------------------------------------------------------------------------
# TTML (IMSC 1.1 text profile)

TTML_NAMESPACES = {
    "": "http://www.w3.org/ns/ttml",
    "ttp": "http://www.w3.org/ns/ttml#parameter",
    "tts": "http://www.w3.org/ns/ttml#styling",
    "ttm": "http://www.w3.org/ns/ttml#metadata",
}
IMSC_TEXT_PROFILE = "http://www.w3.org/ns/ttml/profile/imsc1.1/text"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"


def _tt(name: str, prefix: str = "") -> str:
    return f"{{{TTML_NAMESPACES[prefix]}}}{name}"


def _ttml_clock(ms: int) -> str:
    return _vtt_timestamp(max(ms, 0))


def to_ttml(cues: list[Cue], language: str = "en", profile: SubtitleProfile | None = None,
            style: AssStyle | None = None) -> str:
    """A TTML document in the IMSC 1.1 text profile: ``xml:lang``, the profile's frame rate (with the 1000/1001
    multiplier for 23.976 and 29.97), media time base, a bottom region, and one ``<p>`` per cue with ``<br/>``
    between its lines. Times are the cues' own (snapped to frames by segmentation)."""
    profile = profile or get_profile()
    style = style or AssStyle()
    rate = profile.rate
    multiplier = rate / round(rate)
    for prefix, uri in TTML_NAMESPACES.items():
        ET.register_namespace(prefix, uri)
    root = ET.Element(_tt("tt"), {
        _XML_LANG: language,
        _tt("timeBase", "ttp"): "media",
        _tt("frameRate", "ttp"): str(round(rate)),
        _tt("contentProfiles", "ttp"): IMSC_TEXT_PROFILE,
        _tt("extent", "tts"): f"{style.play_res_x}px {style.play_res_y}px",
    })
    if multiplier != 1:
        root.set(_tt("frameRateMultiplier", "ttp"), f"{multiplier.numerator} {multiplier.denominator}")
    head = ET.SubElement(root, _tt("head"))
    styling = ET.SubElement(head, _tt("styling"))
    ET.SubElement(styling, _tt("style"), {
        _XML_ID: "default", _tt("fontFamily", "tts"): "proportionalSansSerif", _tt("fontSize", "tts"): "100%",
        _tt("textAlign", "tts"): "center", _tt("color", "tts"): style.base_color.lower(),
        _tt("textOutline", "tts"): f"{style.outline_color.lower()} 5%" if style.outline else "none",
    })
    layout = ET.SubElement(head, _tt("layout"))
    ET.SubElement(layout, _tt("region"), {
        _XML_ID: "bottom", _tt("origin", "tts"): "10% 10%", _tt("extent", "tts"): "80% 80%",
        _tt("displayAlign", "tts"): "after",
    })
    body = ET.SubElement(root, _tt("body"), {"style": "default", "region": "bottom"})
    div = ET.SubElement(body, _tt("div"))
    for cue in cues:
        paragraph = ET.SubElement(div, _tt("p"), {_XML_ID: f"cue{cue.index}", "begin": _ttml_clock(cue.start_ms),
                                                  "end": _ttml_clock(cue.end_ms)})
        paragraph.text = cue.lines[0] if cue.lines else ""
        for line in cue.lines[1:]:
            ET.SubElement(paragraph, _tt("br")).tail = line
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ----------------------------------------------------------------------------------------------------------
# Word exports


def _word_record(word: WordTiming) -> dict[str, Any]:
    return {**word.model_dump(), "timed": word.timed}


def to_words_json(words: list[WordTiming], cues: list[Cue], metadata: Mapping[str, Any]) -> str:
    """JSON document ``{"metadata", "words", "cues"}``; ``metadata`` must name method, language, model and
    profile (more keys are kept)."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"words JSON metadata lacks {', '.join(missing)}")
    document = {
        "metadata": dict(metadata),
        "words": [_word_record(w) for w in sorted(words, key=lambda w: w.index)],
        "cues": [cue.model_dump() for cue in cues],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def to_words_csv(words: list[WordTiming]) -> str:
    """CSV with columns index,text,spoken,start_ms,end_ms,score,source,timed; untimed times are empty."""
    frame = pd.DataFrame(
        [_word_record(w) for w in sorted(words, key=lambda w: w.index)], columns=WORDS_CSV_COLUMNS
    )
    frame = frame.astype({"index": "Int64", "start_ms": "Int64", "end_ms": "Int64", "score": "Float64"})
    return frame.to_csv(index=False, lineterminator="\n")
