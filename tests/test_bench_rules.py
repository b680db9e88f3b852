"""The subtitle benchmark's rule checker on crafted cues: each rule fires at its threshold and not before, and it
agrees with what segment_cues records for its own cues."""

from __future__ import annotations

import pytest

from bench.rules import PROFILE_RULES, RuleTally, cue_violations, cues_from_srt
from narration.schema import Cue, WordTiming
from narration.subtitles import get_profile, segment_cues, to_srt


def cue(start_ms: int, end_ms: int, *lines: str) -> Cue:
    return Cue(index=1, start_ms=start_ms, end_ms=end_ms, lines=list(lines))


def broken(*cues: Cue, **profile_overrides) -> list[list[str]]:
    return cue_violations(list(cues), get_profile("netflix-adult", **profile_overrides))


def test_a_readable_cue_breaks_nothing():
    council = cue(0, 3100, "The council approved the budget", "for the new library.")  # 52 chars: 16.8 a second
    assert broken(council, cue(3180, 5000, "Next.")) == [[], []]


@pytest.mark.parametrize(
    ("fine", "bad", "rule"),
    [
        (cue(0, 5000, "x" * 42), cue(0, 5000, "x" * 43), "chars_per_line"),
        (cue(0, 5000, "one", "two"), cue(0, 5000, "one", "two", "three"), "max_lines"),
        (cue(0, 801, "Hi."), cue(0, 800, "Hi."), "min_duration"),  # 21 frames at 25 fps, then 20
        (cue(0, 7000, "A long pause."), cue(0, 7001, "A long pause."), "max_duration"),
        # 34 characters (spaces included) in 2 s (50 frames) is exactly 17 a second; 49 frames is too short.
        (
            cue(0, 1961, "Reading speed held", "to seventeen ok"),
            cue(0, 1960, "Reading speed held", "to seventeen ok"),
            "cps",
        ),
    ],
)
def test_each_rule_fires_at_its_threshold(fine, bad, rule):
    assert broken(fine) == [[]]
    assert broken(bad) == [[rule]]


def test_gap_is_two_frames_at_the_profile_frame_rate():
    # Judged in frames a player shows: the first cue is hidden from frame 50; frame 51 empty, then shown from 52.
    first, two_frames, one_frame = cue(0, 2000, "First cue."), cue(2041, 4000, "Next one."), cue(2040, 4000, "Next.")
    assert broken(first, two_frames)[0] == []
    assert broken(first, one_frame)[0] == ["min_gap"]
    assert broken(first, cue(1900, 4000, "Overlap."))[0] == ["min_gap"]  # overlapping cues too
    assert broken(first, cue(2067, 4000, "Next one."), fps=30)[0] == []  # 2 frames at 30 fps: 67 ms


@pytest.mark.parametrize(
    ("upper", "lower"),
    [
        ("We walked into the", "house at midnight."),  # article + noun
        ("The mayor thanked Amelia", "Hart for her work."),  # first + last name
        ("After the storm they", "rebuilt the pier."),  # pronoun + verb
        ("The pier has", "reopened for the summer."),  # auxiliary + verb
    ],
)
def test_forbidden_line_and_cue_breaks(upper, lower):
    assert broken(cue(0, 4000, upper, lower)) == [["line_break"]]
    assert broken(cue(0, 2000, upper), cue(2080, 4000, lower))[0] == ["cue_break"]


def test_punctuation_and_function_words_are_good_breaks():
    assert broken(cue(0, 4000, "It rained all night,", "and the pier held.")) == [[]]
    assert broken(cue(0, 4000, "The pier held firm", "in the storm.")) == [[]]


def test_srt_is_read_as_a_player_shows_it():
    # whisperX's writer leaves a trailing space before its line break; a viewer does not see it.
    srt = "1\n00:00:01,000 --> 00:00:04,500\nGood evening, and welcome to the evening \nbulletin.\n\n"
    [read] = cues_from_srt(srt)
    assert (read.start_ms, read.end_ms) == (1000, 4500)
    assert broken(read) == [[]]
    assert [line.strip() for line in read.lines] == ["Good evening, and welcome to the evening", "bulletin."]


def test_tally_counts_cues_and_words_per_rule():
    tally = RuleTally()
    tally.add([cue(0, 500, "Hi."), cue(550, 3000, "Fine and", "steady here.")])
    shares = tally.shares()
    assert tally.cues == 2 and tally.broken["min_duration"] == 1 and tally.broken["min_gap"] == 1
    assert sum(tally.broken.values()) == 2
    assert shares["min_duration"] == 0.5 and shares["any"] == 0.5 and shares["words"] == 1 / 5


def fast_words(text: str, ms_per_char: int, pause_after: dict[int, int]) -> list[WordTiming]:
    words, t = [], 0
    for index, token in enumerate(text.split()):
        duration = len(token) * ms_per_char
        words.append(
            WordTiming(
                index=index, text=token, spoken=token.lower(), start_ms=t, end_ms=t + duration, score=1.0, source="test"
            )
        )
        t += duration + pause_after.get(index, 20)
    return words


def test_checker_agrees_with_what_segment_cues_records():
    """Our cues, written as SRT and read back, break exactly the profile rules segment_cues says they break."""
    text = (
        "Rail services between the two stations will be reduced by a quarter over the weekend. "
        "Passengers are advised to check times before they travel. Good night."
    )
    for ms_per_char in (40, 55, 75):  # very fast (rules must break), brisk, relaxed
        words = fast_words(text, ms_per_char, {14: 300, 23: 2000})
        cues = segment_cues(words, "netflix-adult")
        read_back = cues_from_srt(to_srt(cues))
        checked = cue_violations(read_back)
        assert [[r for r in rules if r in PROFILE_RULES] for rules in checked] == [c.violations for c in cues]
        if ms_per_char == 40:
            assert any(checked), "the fast case should break a rule, or this test checks nothing"
