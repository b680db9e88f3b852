"""WebVTT, written by pysubs2; optionally with an inline timestamp before each word (karaoke-style players),
which pysubs2 cannot express, built here as cue text."""

from __future__ import annotations

from collections.abc import Mapping

from narration.schema import Cue, WordTiming
from narration.subtitles.formats.base import (
    SubtitleDocument,
    clock_timestamp,
    cue_tokens,
    subs_from_cues,
    word_spans_in_cue,
)
from narration.subtitles.segment import effective_spans


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_karaoke_text(
    cue: Cue, words_by_index: Mapping[int, WordTiming], spans: Mapping[int, tuple[int, int]]
) -> str:
    """Cue text with a ``<hh:mm:ss.mmm>`` timestamp before every word after the first.

    WebVTT wants each timestamp strictly after the cue start and the previous timestamp and before the cue
    end; a word whose time cannot satisfy that (a cue shorter than its word count in ms) gets no timestamp.
    """
    if not cue.word_indexes:  # a cue made by hand without words: nothing to time
        return r"\N".join(_vtt_escape(line) for line in cue.lines)
    word_spans = word_spans_in_cue(cue, spans)
    previous = cue.start_ms
    out_lines: list[str] = []
    position = 0
    for group in cue_tokens(cue, words_by_index):
        parts = []
        for token in group:
            if position > 0:
                stamp = max(word_spans[position][0], previous + 1)
                if stamp < cue.end_ms:
                    parts.append(f"<{clock_timestamp(stamp)}>")
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
    return subs_from_cues(cues, texts).to_string("vtt", keep_ssa_tags=True)


def write(document: SubtitleDocument) -> str:
    return to_vtt(document.cues, document.words, inline_word_timestamps=document.vtt_word_timestamps)
