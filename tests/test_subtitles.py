"""Subtitle profiles and cue segmentation on crafted word timings: the Netflix-style rules are kept where the
speech allows, every broken rule is reported, and no word (timed or not) is ever lost."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from narration.normalize import normalize_script
from narration.schema import WordTiming
from narration.subtitles import PROFILES, UnknownProfileError, effective_spans, get_profile, segment_cues
from narration.subtitles.segment import is_forbidden_break

PROFILE = get_profile("netflix-adult")


def speak(
    text: str,
    ms_per_char: float = 65,
    word_gap_ms: int = 40,
    sentence_pause_ms: int = 400,
    pauses: dict[int, int] | None = None,
    start_ms: int = 200,
) -> list[WordTiming]:
    """Timings as a narrator would produce them: word length ~ spoken characters, pauses after sentences.

    ``pauses`` maps a token index to the silence after it (overriding the defaults)."""
    words = []
    t = start_ms
    for token in normalize_script(text):
        spoken = " ".join(token.spoken)
        duration = int(len(spoken) * ms_per_char) + 40
        words.append(WordTiming.of(token, t, t + duration, 0.9, source="test"))
        pause = sentence_pause_ms if token.original.rstrip("\"')").endswith((".", "!", "?")) else word_gap_ms
        t += duration + (pauses or {}).get(token.index, pause)
    return words


def line_breaks(cues):
    """(last token of a line, first token of the next) for every line break inside a cue."""
    pairs = []
    for cue in cues:
        for upper, lower in zip(cue.lines, cue.lines[1:]):
            pairs.append((upper.split()[-1], lower.split()[0]))
    return pairs


def cue_breaks(cues, words):
    by_index = {w.index: w for w in words}
    return [(by_index[a.word_indexes[-1]].text, by_index[b.word_indexes[0]].text) for a, b in pairwise(cues)]


def assert_well_formed(cues, words, profile=PROFILE):
    """Invariants every segmentation keeps, whatever the input."""
    assert [i for c in cues for i in c.word_indexes] == sorted(w.index for w in words), (
        "words lost or reordered"
    )
    by_index = {w.index: w for w in words}
    for cue in cues:
        assert " ".join(cue.lines) == " ".join(by_index[i].text for i in cue.word_indexes)
        assert cue.end_ms > cue.start_ms
        assert all(line for line in cue.lines)
        if any(len(line) > profile.max_chars_per_line for line in cue.lines):
            assert "chars_per_line" in cue.violations
        if len(cue.lines) > profile.max_lines:
            assert "max_lines" in cue.violations
        # Snapped to frames, on the 10 ms grid every format writes exactly.
        for ms in (cue.start_ms, cue.end_ms):
            assert ms % 10 == 0 and profile.frame_time_ms(profile.first_frame_from(ms)) == ms
        frames = profile.frames_shown(cue.start_ms, cue.end_ms)
        assert (frames < profile.min_duration_frames) == ("min_duration" in cue.violations)
        assert (frames > profile.max_duration_frames) == ("max_duration" in cue.violations)
        cps = len(" ".join(cue.lines)) * float(profile.rate) / frames
        assert (cps > profile.max_cps + 1e-6) == ("cps" in cue.violations)
    for earlier, later in pairwise(cues):
        assert later.start_ms >= earlier.end_ms, "cues overlap"
        gap = profile.first_frame_from(later.start_ms) - profile.first_frame_from(earlier.end_ms)
        assert (gap < profile.min_gap_frames) == ("min_gap" in earlier.violations)
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))


# ----------------------------------------------------------------------------------------------------------
# Profiles


def test_default_profile_is_netflix_adult():
    assert PROFILE.max_chars_per_line == 42 and PROFILE.max_lines == 2 and PROFILE.fps == 25
    assert (PROFILE.min_duration_frames, PROFILE.max_duration_frames) == (21, 175)  # 5/6 s and 7 s at 25 fps
    assert PROFILE.min_duration_ms == 840 and PROFILE.max_duration_ms == 7000
    assert PROFILE.max_cps == 17 and PROFILE.min_gap_ms == 80 and PROFILE.linger_ms == 480  # 12 frames
    assert get_profile("netflix-adult-20cps").max_cps == 20


@pytest.mark.parametrize("fps, min_frames, max_frames, gap_ms, linger_ms", [
    (23.976, 20, 167, 84, 500.5), (24, 20, 168, 84, 500), (25, 21, 175, 80, 480), (29.97, 25, 209, 67, 400.4),
    (30, 25, 210, 67, 400),
])
def test_every_frame_rule_follows_the_frame_rate(fps, min_frames, max_frames, gap_ms, linger_ms):
    profile = get_profile("netflix-adult", fps=fps)
    assert (profile.min_duration_frames, profile.max_duration_frames) == (min_frames, max_frames)
    assert profile.min_gap_ms == gap_ms and profile.linger_ms == pytest.approx(linger_ms)
    words = speak("Yes.", start_ms=1013) + speak("Then another sentence follows.", start_ms=4007)
    words = [w.model_copy(update={"index": k}) for k, w in enumerate(words)]
    cues = segment_cues(words, profile)
    assert_well_formed(cues, words, profile)
    # The one-word cue lasts exactly the minimum number of frames, starting on the frame its speech starts in.
    assert profile.frames_shown(cues[0].start_ms, cues[0].end_ms) == min_frames
    assert profile.frame_at(1013) == profile.first_frame_from(cues[0].start_ms)


def test_profile_overrides_are_validated_and_fps_sets_the_gap():
    assert get_profile("netflix-adult", fps=30).min_gap_ms == 67
    assert get_profile("netflix-adult", fps=24, min_gap_frames=3).min_gap_ms == 125
    for bad in (0, 50, 23.98):
        with pytest.raises(ValueError, match="fps must be one of 23.976, 24, 25, 29.97, 30"):
            get_profile("netflix-adult", fps=bad)
    with pytest.raises(ValueError):
        get_profile("netflix-adult", max_lines_typo=3)


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(UnknownProfileError) as caught:
        get_profile("netflix-kids")
    for name in PROFILES:
        assert name in str(caught.value)


def test_segment_cues_accepts_a_profile_name():
    words = speak("Hello there. How are you today?")
    assert segment_cues(words, "netflix-adult-20cps") == segment_cues(
        words, get_profile("netflix-adult-20cps")
    )


# ----------------------------------------------------------------------------------------------------------
# Segmentation


def test_sentences_become_cues_and_short_lines_stay_on_one_line():
    words = speak("The storm reached the coast at dawn. Fishermen dragged boats onto the sand.")
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert [c.lines for c in cues] == [
        ["The storm reached the coast at dawn."],
        ["Fishermen dragged boats onto the sand."],
    ]
    assert all(c.violations == [] for c in cues)


def test_long_sentence_is_split_within_every_limit():
    text = (
        "After three long weeks of negotiations between the harbour authority and the fishermen of the "
        "northern "
        "villages the council finally agreed to rebuild the old stone pier before the winter storms arrived"
    )
    words = speak(text)
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert len(cues) >= 3
    assert all(c.violations == [] for c in cues), [(c.lines, c.violations) for c in cues]
    assert max(c.end_ms - c.start_ms for c in cues) <= 7000
    for before, after in line_breaks(cues) + cue_breaks(cues, words):
        assert not is_forbidden_break(before, after), (before, after)


def test_slow_unpunctuated_speech_is_split_under_max_duration():
    words = speak(
        "we walked along the river and over the bridge and past the mill and up the hill to the farm",
        ms_per_char=200,
        word_gap_ms=120,
    )
    assert words[-1].end_ms - words[0].start_ms > 14_000
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert all(c.end_ms - c.start_ms <= 7000 for c in cues)


def test_line_break_goes_after_punctuation_and_before_conjunctions():
    words = speak("When the lights went out in the theatre, everyone stood still and waited.")
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert len(cues) == 1
    assert cues[0].lines == ["When the lights went out in the theatre,", "everyone stood still and waited."]


def test_fast_speech_breaks_reading_speed_and_says_so():
    words = speak(
        "This announcement is being read far too quickly for anybody to follow it comfortably.",
        ms_per_char=25,
        word_gap_ms=10,
        start_ms=0,
    )
    # The next sentence follows at once, so lingering cannot rescue the reading speed.
    words += [
        WordTiming(
            index=len(words),
            text="Next.",
            spoken="next",
            start_ms=words[-1].end_ms + 300,
            end_ms=words[-1].end_ms + 700,
            source="test",
        )
    ]
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert "cps" in cues[0].violations
    assert PROFILE.first_frame_from(words[-1].start_ms) - PROFILE.first_frame_from(cues[0].end_ms) >= 2


def test_out_time_lingers_for_reading_time_but_at_most_twelve_frames():
    text = "Extraordinary circumstances demand extraordinary measures."  # 59 chars: needs 3.5 s at 17 cps
    words = speak(text, ms_per_char=45, word_gap_ms=20, start_ms=0)
    speech_end = words[-1].end_ms
    assert speech_end < 3000
    alone = segment_cues(words)
    assert_well_formed(alone, words)
    assert PROFILE.first_frame_from(alone[0].end_ms) == PROFILE.first_frame_from(speech_end) + 12
    assert "cps" in alone[0].violations
    # With the next cue soon after, the out-time stops two frames before it.
    following = speak(
        "Nobody in the crowded room had expected anything quite like that.", start_ms=speech_end + 200
    )
    following = [w.model_copy(update={"index": w.index + len(words)}) for w in following]
    cues = segment_cues([*words, *following])
    assert_well_formed(cues, [*words, *following])
    assert cues[0].word_indexes == [w.index for w in words]
    assert PROFILE.first_frame_from(cues[0].end_ms) == PROFILE.frame_at(following[0].start_ms) - 2
    # A looser reading speed needs no linger: out at the first frame after the speech.
    relaxed = segment_cues(words, get_profile("netflix-adult", max_cps=25))
    assert PROFILE.first_frame_from(relaxed[0].end_ms) == PROFILE.first_frame_from(speech_end)
    assert relaxed[0].violations == []


def test_short_cue_extends_into_silence_to_the_minimum_duration():
    words = speak("Yes.", start_ms=1000) + [
        WordTiming(index=1, text="Then", spoken="then", start_ms=4000, end_ms=4300, source="test"),
        WordTiming(index=2, text="silence.", spoken="silence", start_ms=4350, end_ms=5000, source="test"),
    ]
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert cues[0].lines == ["Yes."] and cues[0].violations == []
    assert PROFILE.frames_shown(cues[0].start_ms, cues[0].end_ms) == PROFILE.min_duration_frames


def test_short_sentences_close_together_are_merged():
    words = speak("Yes. No. Maybe.", sentence_pause_ms=120, ms_per_char=60)
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert len(cues) == 1 and cues[0].violations == []
    assert cues[0].lines == ["Yes. No. Maybe."]


def test_contiguous_speech_keeps_two_frames_between_cues():
    text = (
        "The first sentence runs straight into the second one without any pause at all. "
        "The second sentence carries on in exactly the same breathless way."
    )
    words = speak(text, sentence_pause_ms=0, word_gap_ms=0)
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert len(cues) >= 2
    for earlier, later in pairwise(cues):
        assert PROFILE.first_frame_from(later.start_ms) - PROFILE.first_frame_from(earlier.end_ms) >= 2


def test_long_pause_always_splits_even_mid_sentence():
    words = speak("The answer to the question is forty two", pauses={5: 2000})  # after "is"
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert [c.lines for c in cues] == [["The answer to the question is"], ["forty two"]]
    assert "min_duration" not in cues[1].violations  # extended into the silence after it


def test_moderate_pause_is_preferred_over_a_plain_break():
    text = "She opened the letter slowly and read it twice before she put it down on the kitchen table"
    plain = segment_cues(speak(text))
    paused_at = [w.text for w in speak(text)].index("twice")
    cues = segment_cues(speak(text, pauses={paused_at: 700}))
    assert [c.lines for c in plain] != [c.lines for c in cues]
    assert cues[0].lines[-1].endswith("read it twice")


def test_numbers_keep_their_written_form_and_their_unit():
    text = (
        "The fund raised $1,250.50 in March and grew 25 percent by 2021, reaching 3,000 members in 12 lands."
    )
    words = speak(text)
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    text_out = " ".join(" ".join(c.lines) for c in cues)
    assert "$1,250.50" in text_out and "3,000 members" in text_out
    breaks = line_breaks(cues) + cue_breaks(cues, words)
    for pair in [("25", "percent"), ("3,000", "members"), ("12", "lands.")]:
        assert pair not in breaks
    # The only two-line layout of this 81-character sentence breaks between "25" and "percent".
    tight = speak("Last winter the old rowing club paid 25 percent more for each of their new boats.")
    cues = segment_cues(tight)
    assert_well_formed(cues, tight)
    assert ("25", "percent") not in line_breaks(cues) + cue_breaks(cues, tight)
    assert any("25 percent" in line for c in cues for line in c.lines)


def test_first_and_last_names_stay_together():
    # The only two-line layout of this 80-character sentence breaks between "Margaret" and "Thompson".
    text = "At the annual meeting the chair Margaret Thompson presented the survey results."
    words = speak(text)
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    greedy_first_line = text[: text.rfind(" ", 0, 43)]
    assert greedy_first_line.endswith("Margaret")
    breaks = line_breaks(cues) + cue_breaks(cues, words)
    assert ("Margaret", "Thompson") not in breaks
    assert any("Margaret Thompson" in line for c in cues for line in c.lines)


@pytest.mark.parametrize(
    ("before", "after", "forbidden"),
    [
        ("the", "harbour", True),
        ("an", "apple", True),  # article + noun
        ("John", "Smith", True),  # first + last name
        ("they", "walked", True),
        ("she", "said", True),  # pronoun + verb
        ("will", "arrive", True),
        ("had", "gone", True),  # auxiliary + verb
        ("25", "percent", True),  # number + unit
        ("Dr.", "Watson", True),  # an abbreviation is not a sentence end
        ("don’t", "know", True),  # typographic apostrophe
        ("harbour,", "and", False),
        ("said.", "The", False),  # punctuation ends the pair
        ("walked", "to", False),
        ("boats", "and", False),  # before prepositions / conjunctions
        ("they", "and", False),
        ("is", "the", False),
    ],
)
def test_forbidden_pairs(before, after, forbidden):
    assert is_forbidden_break(before, after) is forbidden


_DETERMINERS = ["the", "a", "an", "this", "their"]
_NOUNS = ["harbour", "storm", "village", "fisherman", "lighthouse", "council", "winter", "boat", "apple"]
_ADJECTIVES = ["old", "grey", "enormous", "quiet", "northern"]
_VERBS = ["watched", "crossed", "rebuilt", "painted", "remembered"]
_PREPOSITIONS = ["near", "behind", "with", "across", "before"]

noun_phrase = st.tuples(
    st.sampled_from(_DETERMINERS), st.lists(st.sampled_from(_ADJECTIVES), max_size=2), st.sampled_from(_NOUNS)
).map(lambda t: [t[0], *t[1], t[2]])
clause = st.tuples(
    noun_phrase, st.sampled_from(_VERBS), noun_phrase, st.sampled_from(_PREPOSITIONS), noun_phrase
).map(lambda t: [*t[0], t[1], *t[2], t[3], *t[4]])


@settings(max_examples=60, deadline=None)
@given(
    clauses=st.lists(clause, min_size=1, max_size=6),
    ms_per_char=st.integers(min_value=30, max_value=140),
    untimed=st.sets(st.integers(min_value=0, max_value=120), max_size=8),
)
def test_article_and_noun_are_never_split_and_no_word_is_lost(clauses, ms_per_char, untimed):
    text = " ".join(" ".join(c) + "." for c in clauses)
    words = [
        w if w.index not in untimed else w.model_copy(update={"start_ms": None, "end_ms": None})
        for w in speak(text, ms_per_char=ms_per_char)
    ]
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    for before, _after in line_breaks(cues):
        assert before.lower() not in _DETERMINERS


# ----------------------------------------------------------------------------------------------------------
# Untimed words


def test_untimed_words_are_kept_and_placed_between_their_neighbours():
    words = speak("The price was 1,250 dollars that year.")
    gap_word = words[3]  # "1,250": an aligner without digits leaves it untimed
    words[3] = gap_word.model_copy(update={"start_ms": None, "end_ms": None})
    spans = effective_spans(words)
    assert words[2].end_ms <= spans[3][0] < spans[3][1] <= words[4].start_ms
    cues = segment_cues(words)
    assert_well_formed(cues, words)
    assert any(3 in c.word_indexes for c in cues)
    assert "1,250" in " ".join(line for c in cues for line in c.lines)


def test_untimed_words_at_the_edges_and_everywhere():
    words = speak("Hello brave new world of subtitles.", start_ms=2000)
    edges = [
        w.model_copy(update={"start_ms": None, "end_ms": None}) if w.index in (0, 5) else w for w in words
    ]
    spans = effective_spans(edges)
    assert spans[0][1] <= words[1].start_ms and spans[0][0] >= 0
    assert spans[5][0] >= words[4].end_ms
    assert_well_formed(segment_cues(edges), edges)

    nothing_timed = [w.model_copy(update={"start_ms": None, "end_ms": None}) for w in words]
    spans = effective_spans(nothing_timed)
    starts = [spans[w.index][0] for w in nothing_timed]
    assert starts == sorted(starts) and spans[5][1] > 0
    cues = segment_cues(nothing_timed)
    assert_well_formed(cues, nothing_timed)


def test_untimed_run_shares_the_silence_by_spoken_length():
    words = [
        WordTiming(index=0, text="From", spoken="from", start_ms=0, end_ms=300, source="t"),
        WordTiming(index=1, text="A", spoken="a", source="t"),
        WordTiming(index=2, text="1920s", spoken="nineteen twenties", source="t"),
        WordTiming(index=3, text="film.", spoken="film", start_ms=2300, end_ms=2700, source="t"),
    ]
    spans = effective_spans(words)
    assert spans[1][0] == 300 and spans[2][1] == 2300
    assert (spans[2][1] - spans[2][0]) > 5 * (spans[1][1] - spans[1][0])


def test_empty_input_gives_no_cues():
    assert segment_cues([]) == []


def test_line_layout_balances_lines_when_break_costs_tie():
    from narration.subtitles import get_profile
    from narration.subtitles.segment import layout_lines

    words = ["Ran", "away", "on", "a", "black", "night", "with", "a", "lawful", "wedded", "man."]
    lines, _ = layout_lines(words, get_profile())
    assert lines == ["Ran away on a black night", "with a lawful wedded man."]
