"""The WebVTT chapters track (``kind="chapters"``): one cue per chapter, its title as the cue text.

Every item has one: a long item's chapters (its heading lines or ``chapters`` field), or one chapter over the
whole item, so a player's chapter menu works the same for every file of a batch.
"""

from __future__ import annotations

from narration.schema import ChapterMark
from narration.subtitles.formats.base import SubtitleDocument, clock_timestamp


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("-->", "--&gt;")


def to_chapters_vtt(chapters: list[ChapterMark]) -> str:
    """WebVTT text with one numbered cue per chapter; each ends where the next starts."""
    blocks = ["WEBVTT"]
    for n, chapter in enumerate(chapters, start=1):
        end = max(chapter.end_ms, chapter.start_ms + 1)  # WebVTT wants each cue to end after it starts
        title = " ".join(chapter.title.split())  # one line: a blank line would end the cue
        blocks.append(f"{n}\n{clock_timestamp(chapter.start_ms)} --> {clock_timestamp(end)}\n{_escape(title)}")
    return "\n\n".join(blocks) + "\n"


def write(document: SubtitleDocument) -> str:
    return to_chapters_vtt(document.chapter_marks())
