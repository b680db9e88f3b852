"""The word-level CSV export, one row per word; untimed words keep empty times."""

from __future__ import annotations

import pandas as pd

from narration.schema import WordTiming
from narration.subtitles.formats.base import SubtitleDocument, word_record

WORDS_CSV_COLUMNS = ["index", "text", "spoken", "start_ms", "end_ms", "score", "source", "timed"]


def to_words_csv(words: list[WordTiming]) -> str:
    """CSV with columns index,text,spoken,start_ms,end_ms,score,source,timed; untimed times are empty."""
    frame = pd.DataFrame(
        [word_record(w) for w in sorted(words, key=lambda w: w.index)], columns=WORDS_CSV_COLUMNS
    )
    frame = frame.astype({"index": "Int64", "start_ms": "Int64", "end_ms": "Int64", "score": "Float64"})
    return frame.to_csv(index=False, lineterminator="\n")


def write(document: SubtitleDocument) -> str:
    return to_words_csv(document.words)
