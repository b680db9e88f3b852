"""SubRip (SRT), written by pysubs2: the cues' lines as laid out."""

from __future__ import annotations

from narration.schema import Cue
from narration.subtitles.formats.base import SubtitleDocument, subs_from_cues


def to_srt(cues: list[Cue]) -> str:
    """SubRip text of the cues (lines as laid out)."""
    subs = subs_from_cues(cues, [r"\N".join(cue.lines) for cue in cues])
    return subs.to_string("srt", keep_ssa_tags=True)


def write(document: SubtitleDocument) -> str:
    return to_srt(document.cues)
