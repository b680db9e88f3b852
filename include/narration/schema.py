"""The data shapes of the product, in one place: items, chunks, word timings, cues and results.

Every output (subtitles, word CSV/JSON, reports) is derived from these models; workers exchange them as JSON in S3.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from narration.align import DEFAULT_ALIGNER, FALLBACK_ALIGNER
from narration.encodings import DELIVERY_ENCODINGS, check_encodings
from narration.languages import DEFAULT_LANGUAGE
from narration.subtitles.formats import SUBTITLE_FORMATS, check_formats
from narration.subtitles.profile import DEFAULT_PROFILE, FRAME_RATES
from narration.synth import DEFAULT_SYNTHESIZER


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------------------------------------
# Input: manifest lines and the items they become


class LineError(Model):
    """A manifest line that was rejected; it goes to the batch's quarantine and report."""

    manifest: str
    line: int = Field(description="1-based line number in the manifest file (0 = the file as a whole).")
    field: str | None = None
    reason: str
    raw: str = Field("", description="The offending line, truncated, for the quarantine file.")


class Pronunciation(Model):
    """A lexicon entry that matches a word or phrase of an item (resolved at planning): say ``alias`` instead of
    it, or speak ``phonemes`` (IPA, one word) where the backend takes phonemes."""

    grapheme: str = Field(description="The word or phrase as the lexicon writes it (matched "
                          "case-insensitively, lexicons.match_key).")
    alias: str | None = None
    phonemes: str | None = Field(None, description="IPA (X-SAMPA entries are converted when the lexicon is read).")
    lexicon: str = Field(description="The lexicon's name in the library (lexicons/<name>.pls|.csv).")


class Chapter(Model):
    """A chapter of a long item: its title and the 1-based paragraph it starts at."""

    title: str
    paragraph: int = Field(ge=1)


class ItemSpec(Model):
    """One utterance to narrate, as validated from a manifest line."""

    item_id: str
    text: str
    voice: str
    language: str = DEFAULT_LANGUAGE
    locale: str = Field("en-us", description="The full language tag (en, en-us, en-gb): reading conventions "
                        "such as the order of day and month in 3/4/2025.")
    speed: float = 1.0
    unspoken_words: list[str] = Field(default_factory=list, description="Words of the text in a script no "
                                      "backend speaks: shown in the subtitles but not heard.")
    manifest: str
    line: int
    seed: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    pronunciations: list[Pronunciation] = Field(default_factory=list, description="The entries of the line's "
                                                "and the batch's lexicons that match its words or phrases "
                                                "(LexiconLibrary.resolve: the first lexicon with a grapheme wins).")
    paragraphs: list[int] = Field(default_factory=list, description="Where each paragraph after the first "
                                  "starts: its first word's index among the text's whitespace-separated words "
                                  "(empty: one paragraph).")
    chapters: list[Chapter] = Field(default_factory=list, description="Chapters, in order of their paragraphs.")
    lexicons_not_applied: list[str] = Field(default_factory=list, description="The batch's lexicons for another "
                                            "language than the item's, as 'name (xml:lang)': not applied to it.")


class RunChoices(BaseModel):
    """The choices of a run that its steps need: written into every chunk spec, so each step reads them from its
    chunk alone (the trigger's Params map onto these through :class:`narration.plan.BatchOptions`)."""

    synthesizer: str = DEFAULT_SYNTHESIZER
    aligner: str = Field(DEFAULT_ALIGNER, description="The primary aligner.")
    timing_method: str = Field("primary", pattern=f"^(primary|{FALLBACK_ALIGNER})$",
                               description=f"primary | {FALLBACK_ALIGNER} (every item timed by the fallback aligner)")
    force_fallback: list[str] = Field(default_factory=list, description="Item ids routed to fallback timing.")
    fallback_aligner: str = Field(FALLBACK_ALIGNER, description="Times the items the primary could not.")
    fallback_unavailable: str | None = Field(None, description="Why the fallback cannot run in this batch (it is "
                                             "not configured); named in the items it leaves untimed.")
    formats: list[str] = Field(default_factory=lambda: list(SUBTITLE_FORMATS))
    subtitle_profile: str = DEFAULT_PROFILE
    subtitle_fps: float | None = Field(None, description="Frame rate the cues snap to ("
                                       f"{', '.join(f'{rate:g}' for rate in FRAME_RATES)}); None keeps the profile's.")
    vtt_word_timestamps: bool = False
    loudness_target_lufs: float | None = Field(None, ge=-60, le=-5, description="None: the configured target "
                                               "(NARRATION_LOUDNESS_TARGET_LUFS).")
    true_peak_ceiling_dbtp: float | None = Field(None, ge=-20, le=0)
    audio_encodings: list[str] | None = Field(None, description=f"{', '.join(DELIVERY_ENCODINGS)}; None: the "
                                              "configured ones.")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        return check_formats(value)

    @field_validator("audio_encodings")
    @classmethod
    def _known_encodings(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_encodings(value)


class ChunkSpec(RunChoices):
    """A unit of worker work: items processed by one worker invocation with one model load, and the run's
    choices every step reads."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    chunk_id: str
    items: list[ItemSpec]
    fallback: bool = Field(False, description="A fallback chunk: its align step times it with fallback_aligner.")
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def step_aligner(self) -> str:
        """The aligner this chunk's align step runs."""
        return self.fallback_aligner if self.fallback else self.aligner


# ----------------------------------------------------------------------------------------------------------
# Text: what was written and what is spoken


class ScriptToken(Model):
    """One whitespace token of the script and the words it is spoken as ("$5" -> ["five", "dollars"])."""

    index: int
    original: str
    spoken: list[str]
    unspoken: list[str] = Field(default_factory=list, description="Parts of the token no backend can speak "
                                "(a script other than Latin): shown in subtitles, never heard.")
    phonemes: str | None = Field(None, description="IPA from a lexicon's phoneme entry, for the backends that take "
                                 "phonemes (espeak, Piper, pocketsphinx), which speak it in place of all of "
                                 "``spoken``; the backends that take words only read ``spoken``, as written.")


# ----------------------------------------------------------------------------------------------------------
# Timings


class WordTiming(Model):
    """A script token with its time span. Untimed words keep start/end None and are flagged, never dropped."""

    index: int
    text: str = Field(description="The token as written in the script, punctuation included.")
    spoken: str = Field(description="The normalised words the aligner timed, space separated.")
    start_ms: int | None = None
    end_ms: int | None = None
    score: float | None = None
    source: str = Field(description="Backend that produced the time: pocketsphinx, whisperx, google, espeak...")

    @classmethod
    def of(cls, token: ScriptToken, start_ms: int | None, end_ms: int | None, score: float | None = None, *,
           source: str) -> WordTiming:
        """The timing of one script token: its text as written, its spoken words, the span and who timed it."""
        return cls(index=token.index, text=token.original, spoken=" ".join(token.spoken), start_ms=start_ms,
                   end_ms=end_ms, score=score, source=source)

    @property
    def timed(self) -> bool:
        return self.start_ms is not None and self.end_ms is not None


class Cue(Model):
    index: int
    start_ms: int
    end_ms: int
    lines: list[str]
    word_indexes: list[int] = Field(default_factory=list)
    violations: list[str] = Field(default_factory=list)


class ItemStatus(str, Enum):
    SYNTHESIZED = "synthesized"
    SYNTHESIS_FAILED = "synthesis_failed"
    ALIGNED = "aligned"
    NEEDS_FALLBACK = "needs_fallback"
    TIMING_FAILED = "timing_failed"
    DONE = "done"
    QUARANTINED = "quarantined"
    FAILED = "failed"


class SegmentSpan(Model):
    """One synthesis segment of a long item and where it lies in the item's master audio."""

    index: int
    first_token: int = Field(description="Index of the segment's first script token.")
    end_token: int = Field(description="Index one past its last script token.")
    start_ms: int = Field(description="Where the segment's audio starts in the master.")
    end_ms: int
    start_frame: int = Field(description="The same, in samples of the master (exact, for ranged reads).")
    frames: int
    pause_after_ms: int = Field(0, description="Silence after it: sentence, paragraph or chapter pause.")
    paragraph: int = Field(description="1-based paragraph the segment belongs to.")
    chapter: int | None = Field(None, description="0-based index into the item's chapters, None before the first.")
    seed: int | None = Field(None, description="The seed the segment was synthesised with.")
    audio_key: str = Field(description="The segment's own audio object.")
    reused: bool = Field(False, description="Made by an earlier run of the step and reused (resume).")


class SegmentRecord(Model):
    """Written beside a long item's segment audio as soon as the segment is made: its presence, with the same
    ``cache_key``, lets a resumed run reuse the segment instead of synthesising it again."""

    item_id: str
    index: int
    cache_key: str
    audio_key: str
    sample_rate: int
    frames: int
    first_token: int
    end_token: int
    seed: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 1
    asr_wer: float | None = None
    reference_words: list[WordTiming] | None = Field(None, description="Exact onsets in the segment's own time.")
    compute_s: float = 0.0


class ChapterMark(Model):
    """A chapter as delivered: its title, span in the master and first word."""

    title: str
    start_ms: int
    end_ms: int
    first_word: int = Field(description="Index of the chapter's first script token / word.")


class SynthesisRecord(Model):
    """Written by the synthesis worker next to the item's audio."""

    item_id: str
    status: ItemStatus
    backend: str
    audio_key: str | None = None
    sample_rate: int | None = None
    audio_seconds: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 1
    asr_wer: float | None = None
    reference_words: list[WordTiming] | None = Field(
        None, description="Exact word onsets known to the synthesizer (espeak), for accuracy checks."
    )
    tokens: list[ScriptToken] = Field(default_factory=list)
    compute_s: float = 0.0
    error: str | None = None
    detected_language: str | None = Field(None, description="Spoken language found in the audio (Whisper code).")
    language_probability: float | None = None
    language_mismatch: bool | None = Field(None, description="The detected language is not the requested one.")
    voice_similarity: float | None = Field(None, description="Speaker-embedding cosine between the audio and the "
                                           "voice's reference recording (1 = same voice).")
    voice_cloning: bool | None = Field(None, description="Whether the synthesizer imitates the reference voice "
                                       "(F5-TTS) or speaks in its own (Piper, espeak-ng: not voice cloning).")
    quality_notes: list[str] = Field(default_factory=list, description="Checks that did not run, and why; "
                                     "a language mismatch.")
    segments: list[SegmentSpan] = Field(default_factory=list, description="A long item's synthesis segments, "
                                        "in order (empty: the item was synthesised in one piece).")


class TimingRecord(Model):
    """Written by an aligner worker: the item's word timings or why there are none."""

    item_id: str
    status: ItemStatus
    method: str = Field(description="Backend that actually produced the timings.")
    attempted: list[str] = Field(default_factory=list, description="Every timing backend tried, in order.")
    fallback_reason: str | None = None
    resolution_ms: int | None = None
    language: str = DEFAULT_LANGUAGE
    model: str | None = None
    words: list[WordTiming] = Field(default_factory=list)
    compute_s: float = 0.0
    error: str | None = None

    @property
    def untimed_count(self) -> int:
        return sum(1 for w in self.words if not w.timed)

    @property
    def mean_score(self) -> float | None:
        scores = [w.score for w in self.words if w.score is not None]
        return sum(scores) / len(scores) if scores else None


class ItemResult(Model):
    """One item's line in a worker's result."""

    item_id: str
    status: ItemStatus
    error: str | None = None


class ChunkResult(Model):
    """The one JSON line a worker prints: small, so it fits XCom; the audio and timings stay in S3."""

    batch_id: str
    chunk_id: str
    step: str
    backend: str
    items: list[ItemResult]
    model_loads: int
    model_load_s: float
    compute_s: float
    wall_s: float
    skipped: int = Field(0, description="Items whose outputs already existed (idempotent re-run).")
