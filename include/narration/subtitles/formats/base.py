"""What every output writer reads, and the cue helpers the pysubs2-based writers share.

How to add an output format (one new module plus one registry line):

1. Write ``narration/subtitles/formats/<name>.py`` with ``write(document: SubtitleDocument) -> str``; read only
   the document (cues, words, language, profile, metadata, options). Keep a plain ``to_<name>(...)`` beside it
   when callers outside rendering (benchmarks, tests) want the text from cues directly.
2. Add one line to ``FORMATS`` in ``narration/subtitles/formats/__init__.py``: identifier, file name under the
   item's prefix, content type, module name. The DAG's Params, the CLI, the S3 layout, the content types, the
   render step and the report's column and links all follow from that line.
3. Test the writer in ``tests/test_formats.py`` (ideally against a real client: ffmpeg, a parser).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pysubs2

from narration.schema import ChapterMark, Cue, WordTiming
from narration.subtitles.profile import SubtitleProfile


@dataclass(frozen=True)
class SubtitleDocument:
    """One item's timed text as every writer sees it: its cues and words, the language tag (``item.locale``),
    the subtitle profile, the provenance a writer may embed (words JSON) and the run's writer options."""

    cues: list[Cue]
    words: list[WordTiming]
    language: str = "en"
    profile: SubtitleProfile | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    vtt_word_timestamps: bool = False
    chapters: list[ChapterMark] = field(default_factory=list)

    def chapter_marks(self) -> list[ChapterMark]:
        """The document's chapters; without any, one chapter over every cue, titled with the item's id."""
        if self.chapters:
            return self.chapters
        end = max([cue.end_ms for cue in self.cues] + [w.end_ms or 0 for w in self.words] + [1])
        title = str(self.metadata.get("title") or self.metadata.get("item_id") or "1")
        return [ChapterMark(title=title, start_ms=0, end_ms=end, first_word=0)]


def subs_from_cues(cues: list[Cue], texts: list[str]) -> pysubs2.SSAFile:
    subs = pysubs2.SSAFile()
    for cue, text in zip(cues, texts):
        subs.append(pysubs2.SSAEvent(start=cue.start_ms, end=cue.end_ms, text=text))
    return subs


def word_spans_in_cue(cue: Cue, spans: Mapping[int, tuple[int, int]]) -> list[tuple[int, int]]:
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


def cue_tokens(cue: Cue, words_by_index: Mapping[int, WordTiming]) -> list[list[str]]:
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


def clock_timestamp(ms: int) -> str:
    """``hh:mm:ss.mmm``, as WebVTT cue timestamps and TTML clock times write it."""
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def word_record(word: WordTiming) -> dict[str, Any]:
    """A word as the word exports write it: its fields and whether it is timed."""
    return {**word.model_dump(), "timed": word.timed}
