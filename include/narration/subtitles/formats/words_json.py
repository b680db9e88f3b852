"""The word-level JSON export: provenance, every word (timed or not) and the cues."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from narration.schema import ChapterMark, Cue, WordTiming
from narration.subtitles.formats.base import SubtitleDocument, word_record

REQUIRED_METADATA = ("method", "language", "model", "profile")


def to_words_json(words: list[WordTiming], cues: list[Cue], metadata: Mapping[str, Any],
                  chapters: list[ChapterMark] | None = None) -> str:
    """JSON document ``{"metadata", "words", "cues", "chapters"}``; ``metadata`` must name method, language, model
    and profile (more keys are kept); each chapter has its title, start_ms, end_ms and first word index."""
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"words JSON metadata lacks {', '.join(missing)}")
    document = {
        "metadata": dict(metadata),
        "words": [word_record(w) for w in sorted(words, key=lambda w: w.index)],
        "cues": [cue.model_dump() for cue in cues],
        "chapters": [chapter.model_dump() for chapter in chapters or []],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def write(document: SubtitleDocument) -> str:
    return to_words_json(document.words, document.cues, document.metadata, document.chapter_marks())
