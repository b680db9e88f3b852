"""One subtitle rule checker for every system in the subtitle benchmark: it reads only cue times and lines.

The thresholds come from a :class:`SubtitleProfile` and the forbidden-pair test is segment.py's own, so our cues
and the peers' cues are judged by exactly the rules our segmentation aims at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import pysubs2

from narration.schema import Cue
from narration.subtitles.profile import DEFAULT_PROFILE, SubtitleProfile, get_profile, rule_violations
from narration.subtitles.segment import is_forbidden_break

# Names shared with Cue.violations where segment.py records the same rule.
RULES = (
    "chars_per_line",  # a line longer than max_chars_per_line
    "max_lines",  # more than max_lines lines
    "min_duration",  # on screen for fewer frames than 5/6 s (at the profile's frame rate)
    "max_duration",  # on screen for more frames than 7 s
    "cps",  # more than max_cps characters (spaces included) per second of frames on screen
    "min_gap",  # fewer than min_gap_frames empty frames before the next cue
    "line_break",  # a line break inside article+noun, first+last name, pronoun+verb, auxiliary+verb, number+unit
    "cue_break",  # the same pairs split across two consecutive cues
)
PROFILE_RULES = RULES[:6]


def cue_violations(cues: Sequence[Cue], profile: SubtitleProfile | str | None = None) -> list[list[str]]:
    """The rules each cue breaks, in the order of ``cues`` (one subtitle file's cues, sorted by start).

    Gap and cue-break rules look at the next cue; lines are compared after stripping outer spaces. Durations and
    gaps are counted in the frames a player at the profile's frame rate shows (profile.rule_violations).
    """
    if profile is None or isinstance(profile, str):
        profile = get_profile(profile or DEFAULT_PROFILE)
    result: list[list[str]] = []
    for k, cue in enumerate(cues):
        lines = [line.strip() for line in cue.lines if line.strip()]
        following = cues[k + 1] if k + 1 < len(cues) else None
        broken = rule_violations(profile, cue.start_ms, cue.end_ms, lines,
                                 following.start_ms if following is not None else None)
        if any(is_forbidden_break(before, after) for before, after in pairwise(lines)):
            broken.append("line_break")
        if following is not None and lines and following.lines and is_forbidden_break(lines[-1], following.lines[0]):
            broken.append("cue_break")
        result.append(broken)
    return result


@dataclass
class RuleTally:
    """Cues checked and, per rule, how many broke it; ``add`` one subtitle file at a time."""

    profile: SubtitleProfile = field(default_factory=get_profile)
    cues: int = 0
    broken: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    cues_broken: int = 0  # cues that break at least one rule
    words: int = 0
    words_in_broken: int = 0  # words shown in a cue that breaks a rule: a share that lumping cues cannot shrink
    examples: list[tuple[str, Cue, list[str]]] = field(default_factory=list)

    def add(self, cues: Sequence[Cue], label: str = "") -> list[list[str]]:
        violations = cue_violations(cues, self.profile)
        self.cues += len(cues)
        for cue, rules in zip(cues, violations):
            words = len(" ".join(cue.lines).split())
            self.words += words
            for rule in rules:
                self.broken[rule] += 1
            if rules:
                self.cues_broken += 1
                self.words_in_broken += words
                self.examples.append((label, cue, rules))
        return violations

    def shares(self) -> dict[str, float]:
        """Per rule, the share of cues that break it, then of cues breaking any ("any") and of words shown in
        such cues ("words"); 0 when there are no cues."""
        shares = {rule: (count / self.cues if self.cues else 0.0) for rule, count in self.broken.items()}
        shares["any"] = self.cues_broken / self.cues if self.cues else 0.0
        shares["words"] = self.words_in_broken / self.words if self.words else 0.0
        return shares


def cues_from_srt(text: str, format_: str = "srt") -> list[Cue]:
    """Cues (times in ms, lines as displayed) from SubRip (or ``format_``: vtt, ass) text, as a player reads them."""
    subs = pysubs2.SSAFile.from_string(text, format_=format_)
    subs.sort()
    return [
        Cue(index=number, start_ms=event.start, end_ms=event.end, lines=event.plaintext.split("\n"))
        for number, event in enumerate(subs, 1)
    ]


def cues_from_ttml(text: str) -> list[Cue]:
    """Cues from TTML as ttconv's IMSC reader (independent of our writer) resolves them."""
    import xml.etree.ElementTree as ET

    import ttconv.imsc.reader as imsc_reader
    from ttconv import model

    def text_of(element) -> str:
        return "".join(child.get_text() if isinstance(child, model.Text) else
                       "\n" if isinstance(child, model.Br) else text_of(child) for child in element)

    document = imsc_reader.to_model(ET.ElementTree(ET.fromstring(text)))
    paragraphs = [p for div in document.get_body() for p in div]
    return [Cue(index=n, start_ms=round((p.get_begin() or 0) * 1000), end_ms=round(p.get_end() * 1000),
                lines=text_of(p).split("\n")) for n, p in enumerate(paragraphs, 1)]
