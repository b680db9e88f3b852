"""Subtitle profiles: the named, configurable rule sets (line length, lines, durations, reading speed, gaps).

Every timing rule that a style guide states in frames (the minimum duration of 5/6 s, the gap between events, how
far an out-time may run past the speech) is derived from the profile's frame rate, and cue times are snapped to
that rate's frames. ``get_profile("netflix-adult", fps=29.97)`` returns a validated profile; an unknown name lists
the valid ones.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from narration.errors import ConfigurationFault

# The frame rates a profile may name, and their exact values (the NTSC rates are 24000/1001 and 30000/1001).
FRAME_RATES: dict[float, Fraction] = {
    23.976: Fraction(24000, 1001), 24.0: Fraction(24), 25.0: Fraction(25), 29.97: Fraction(30000, 1001),
    30.0: Fraction(30),
}
# Written times sit on this grid: ASS counts centiseconds, SRT and WebVTT milliseconds, so a time on the grid is
# written exactly by all three and every format keeps every rule the cue met.
TIME_GRID_MS = 10


class SubtitleProfile(BaseModel):
    """Timed-text rules that segmentation respects where the speech allows and reports where it cannot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    max_chars_per_line: int = Field(42, ge=1)
    max_lines: int = Field(2, ge=1)
    fps: float = Field(25.0, description="Frame rate of the video: 23.976, 24, 25, 29.97 or 30. Cue times are "
                       "snapped to its frames and every frame-based rule below is counted in them.")
    min_duration_s: float = Field(5 / 6, ge=0, description="Shortest event, 5/6 s: 20 frames at 23.976 and 24 "
                                  "fps, 21 at 25, 25 at 29.97 and 30.")
    max_duration_s: float = Field(7.0, gt=0)
    max_cps: float = Field(17.0, gt=0, description="Reading speed in characters per second, spaces included.")
    min_gap_frames: int = Field(2, ge=0, description="Frames kept empty between two events.")
    linger_frames: int = Field(12, ge=0, description="How far an out-time may run past the end of the speech "
                               "for reading time (Netflix: up to 12 frames), never into the next event's gap.")
    pause_split_ms: int = Field(
        500, ge=0, description="A pause this long is as good a cue boundary as a full stop."
    )
    hard_pause_ms: int = Field(1500, ge=0, description="A pause this long always ends the cue.")

    @field_validator("fps")
    @classmethod
    def _known_frame_rate(cls, value: float) -> float:
        if value not in FRAME_RATES:
            raise ValueError(f"fps must be one of {', '.join(f'{r:g}' for r in FRAME_RATES)}, got {value:g}")
        return value

    @property
    def rate(self) -> Fraction:
        """The exact frame rate (24000/1001 for 23.976)."""
        return FRAME_RATES[self.fps]

    @property
    def min_duration_frames(self) -> int:
        return math.ceil(Fraction(self.min_duration_s).limit_denominator(1000) * self.rate)

    @property
    def max_duration_frames(self) -> int:
        return math.floor(Fraction(self.max_duration_s).limit_denominator(1000) * self.rate)

    def frames_ms(self, frames: int) -> float:
        """The length of ``frames`` frames in milliseconds (exact, not rounded)."""
        return float(frames * 1000 / self.rate)

    @property
    def min_duration_ms(self) -> float:
        return self.frames_ms(self.min_duration_frames)

    @property
    def max_duration_ms(self) -> float:
        return self.frames_ms(self.max_duration_frames)

    @property
    def min_gap_ms(self) -> int:
        return math.ceil(self.frames_ms(self.min_gap_frames))

    @property
    def linger_ms(self) -> float:
        return self.frames_ms(self.linger_frames)

    def frame_at(self, ms: float) -> int:
        """The frame on screen at ``ms`` (the last frame starting at or before it)."""
        return math.floor(Fraction(ms) * self.rate / 1000)

    def first_frame_from(self, ms: float) -> int:
        """The first frame that starts at or after ``ms``: a cue starting (or ending) at ``ms`` is shown from
        (or hidden at) this frame by a player at this rate."""
        return math.ceil(Fraction(ms) * self.rate / 1000)

    def frame_time_ms(self, frame: int) -> int:
        """A time on the written-time grid that a player at this rate maps to ``frame``: the frame's start
        rounded down to TIME_GRID_MS (less than a frame, so it never reaches the frame before)."""
        return math.floor(frame * 1000 / self.rate / TIME_GRID_MS) * TIME_GRID_MS

    def frames_shown(self, start_ms: float, end_ms: float) -> int:
        """How many frames show a cue from ``start_ms`` to ``end_ms``."""
        return self.first_frame_from(end_ms) - self.first_frame_from(start_ms)


PROFILES: dict[str, SubtitleProfile] = {
    "netflix-adult": SubtitleProfile(name="netflix-adult"),
    "netflix-adult-20cps": SubtitleProfile(name="netflix-adult-20cps", max_cps=20.0),
}
DEFAULT_PROFILE = "netflix-adult"


class UnknownProfileError(ConfigurationFault, ValueError):
    """A profile name that is not in :data:`PROFILES`."""


def get_profile(name: str = DEFAULT_PROFILE, **overrides: Any) -> SubtitleProfile:
    """The named profile, with any field overridden (``fps=30``, ``max_cps=15``) and validated."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise UnknownProfileError(
            f"unknown subtitle profile {name!r}; valid profiles: {', '.join(sorted(PROFILES))}"
        ) from None
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if not overrides:
        return base
    return SubtitleProfile.model_validate({**base.model_dump(), **overrides})


def rule_violations(profile: SubtitleProfile, start_ms: float, end_ms: float, lines: list[str],
                    next_start_ms: float | None) -> list[str]:
    """The timing and layout rules a cue breaks, judged as a player at the profile's frame rate shows it (frames
    on screen, empty frames before the next cue); the one judgement segmentation and every rule check share."""
    broken: list[str] = []
    if any(len(line) > profile.max_chars_per_line for line in lines):
        broken.append("chars_per_line")
    if len(lines) > profile.max_lines:
        broken.append("max_lines")
    frames = profile.frames_shown(start_ms, end_ms)
    if frames < profile.min_duration_frames:
        broken.append("min_duration")
    if frames > profile.max_duration_frames:
        broken.append("max_duration")
    if len(" ".join(lines)) * profile.rate > profile.max_cps * frames + Fraction(1, 10**9):
        broken.append("cps")
    if next_start_ms is not None and (profile.first_frame_from(next_start_ms) - profile.first_frame_from(end_ms)
                                      < profile.min_gap_frames):
        broken.append("min_gap")
    return broken
