"""Subtitle profiles: the named, configurable rule sets (line length, lines, durations, reading speed, gaps).

``get_profile("netflix-adult", fps=30)`` returns a validated profile; an unknown name lists the valid ones.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SubtitleProfile(BaseModel):
    """Timed-text rules that segmentation respects where the speech allows and reports where it cannot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    max_chars_per_line: int = Field(42, ge=1)
    max_lines: int = Field(2, ge=1)
    min_duration_ms: int = Field(833, ge=0, description="5/6 s (20 frames at 24 fps).")
    max_duration_ms: int = Field(7000, ge=1)
    max_cps: float = Field(17.0, gt=0, description="Reading speed in characters per second, spaces included.")
    min_gap_frames: int = Field(2, ge=0)
    fps: float = Field(25.0, gt=0)
    linger_ms: int = Field(
        500, ge=0, description="How far an out-time may run into the following silence for reading time."
    )
    pause_split_ms: int = Field(
        500, ge=0, description="A pause this long is as good a cue boundary as a full stop."
    )
    hard_pause_ms: int = Field(1500, ge=0, description="A pause this long always ends the cue.")

    @property
    def min_gap_ms(self) -> int:
        return math.ceil(self.min_gap_frames * 1000 / self.fps)


PROFILES: dict[str, SubtitleProfile] = {
    "netflix-adult": SubtitleProfile(name="netflix-adult"),
    "netflix-adult-20cps": SubtitleProfile(name="netflix-adult-20cps", max_cps=20.0),
}
DEFAULT_PROFILE = "netflix-adult"


class UnknownProfileError(ValueError):
    """A profile name that is not in :data:`PROFILES`."""


def get_profile(name: str = DEFAULT_PROFILE, **overrides: Any) -> SubtitleProfile:
    """The named profile, with any field overridden (``fps=30``, ``max_cps=15``) and validated."""
    try:
        base = PROFILES[name]
    except KeyError:
        raise UnknownProfileError(
            f"unknown subtitle profile {name!r}; valid profiles: {', '.join(sorted(PROFILES))}"
        ) from None
    if not overrides:
        return base
    return SubtitleProfile.model_validate({**base.model_dump(), **overrides})
