"""Styled Advanced SubStation Alpha (ASS), written by pysubs2, with ``\\kf`` karaoke built here as cue text; its
style (:class:`AssStyle`) is also the look the TTML writer declares."""

from __future__ import annotations

from collections.abc import Mapping

import pysubs2
from pydantic import BaseModel, ConfigDict, Field

from narration.schema import Cue, WordTiming
from narration.subtitles.formats.base import SubtitleDocument, cue_tokens, subs_from_cues, word_spans_in_cue
from narration.subtitles.segment import effective_spans


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
    for start, end in word_spans_in_cue(cue, spans):
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
    groups = cue_tokens(cue, words_by_index)
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
    subs = subs_from_cues(cues, texts)
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


def write(document: SubtitleDocument) -> str:
    return to_ass(document.cues, document.words)
