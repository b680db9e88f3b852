"""Subtitles from word timings: profiles (the rules), segmentation into cues, and the file formats.

Pure functions over the shared schema; callers decide where the text goes (S3, disk). The profiles and the format
registry import light; segmentation and the writers (pysubs2, pandas) load on first use, so the DAG file can read
the registries at parse time.
"""

from __future__ import annotations

from importlib import import_module

from narration.subtitles.profile import (
    DEFAULT_PROFILE,
    FRAME_RATES,
    PROFILES,
    SubtitleProfile,
    UnknownProfileError,
    get_profile,
)

_LAZY = {
    "segment_cues": "segment", "effective_spans": "segment",
    "to_srt": "formats.srt", "to_vtt": "formats.vtt", "to_ass": "formats.ass", "AssStyle": "formats.ass",
    "to_ttml": "formats.ttml", "to_words_json": "formats.words_json", "to_words_csv": "formats.words_csv",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_PROFILE",
    "FRAME_RATES",
    "PROFILES",
    "SubtitleProfile",
    "UnknownProfileError",
    "get_profile",
    *_LAZY,
]
