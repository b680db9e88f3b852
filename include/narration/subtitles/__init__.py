"""Subtitles from word timings: profiles (the rules), segmentation into cues, and the file formats.

Pure functions over the shared schema; callers decide where the text goes (S3, disk).
"""

from narration.subtitles.formats import AssStyle, to_ass, to_srt, to_vtt, to_words_csv, to_words_json
from narration.subtitles.profile import PROFILES, SubtitleProfile, UnknownProfileError, get_profile
from narration.subtitles.segment import effective_spans, segment_cues

__all__ = [
    "PROFILES",
    "AssStyle",
    "SubtitleProfile",
    "UnknownProfileError",
    "effective_spans",
    "get_profile",
    "segment_cues",
    "to_ass",
    "to_srt",
    "to_vtt",
    "to_words_csv",
    "to_words_json",
]
