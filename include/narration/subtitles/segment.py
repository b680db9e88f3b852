"""Cue segmentation: timed script words -> subtitle cues that follow a :class:`SubtitleProfile`.

A cost-minimising search over cue boundaries (dynamic programming, as in Knuth-Plass line breaking)
prefers sentence ends and pauses, avoids splitting grammatical pairs, and records every rule a cue breaks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

from narration.normalize import NUMBERED_ABBREVIATIONS, is_clause_end, is_sentence_end
from narration.schema import Cue, WordTiming
from narration.subtitles.profile import DEFAULT_PROFILE, SubtitleProfile, get_profile, rule_violations

# Small word lists for the line-break rules (Netflix timed-text style guide).
# fmt: off
DETERMINERS = frozenset({"a", "an", "the", "this", "these", "those", "my", "your", "our", "their", "its",
                         "his"})
ARTICLES = frozenset({"a", "an", "the"})
SUBJECT_PRONOUNS = frozenset({"i", "you", "he", "she", "it", "we", "they"})
AUXILIARIES = frozenset({
    "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "do", "does", "did",
    "will", "would", "shall", "should", "can", "could", "may", "might", "must",
    "isn't", "aren't", "wasn't", "weren't", "haven't", "hasn't", "hadn't", "don't", "doesn't", "didn't",
    "won't", "wouldn't", "shouldn't", "can't", "couldn't", "mustn't",
})
CONJUNCTIONS = frozenset({
    "and", "but", "or", "nor", "so", "yet", "because", "although", "though", "while", "whereas", "if",
    "unless", "until", "when", "whenever", "where", "since", "that", "which", "who", "whom", "whose", "as",
    "than", "whether",
})
PREPOSITIONS = frozenset({
    "about", "above", "across", "after", "against", "along", "among", "around", "at", "before", "behind",
    "below", "beneath", "beside", "between", "beyond", "by", "despite", "during", "except", "for", "from",
    "in", "inside", "into", "near", "of", "off", "on", "onto", "over", "past", "through", "throughout", "to",
    "toward", "towards", "under", "unlike", "upon", "with", "within", "without",
})
# fmt: on

NOMINAL_MS_PER_WORD = 300  # BBC guide, ~0.3 s a word: where no neighbour gives untimed words a time
_RE_NUMBER = re.compile(r"^[$£€]?\d[\d,.]*(%|st|nd|rd|th|s)?$")
_EDGE = "\"'“”‘’«»()[]{}<>,;:!?.…—–-*_"

# Costs of the search (relative): a break at a full stop or pause is free, a forbidden pair nearly never wins.
COST_AT_PUNCTUATION = 1.0
COST_BEFORE_FUNCTION_WORD = 2.0
COST_PLAIN_BREAK = 5.0
COST_FORBIDDEN_BREAK = 50.0
COST_UNSPLIT_SENTENCE = 6.0
COST_PER_CUE = 2.0  # fewer, fuller cues read more smoothly than many one-liners
CUE_BREAK_WEIGHT = 1.5  # a cue break interrupts reading more than a line break at the same place
COST_VIOLATION = 100.0


def _bare(part: str) -> str:
    return part.replace("’", "'").strip(_EDGE).lower()


def _first_part(text: str) -> str:
    parts = text.split()
    return parts[0] if parts else ""


def _last_part(text: str) -> str:
    parts = text.split()
    return parts[-1] if parts else ""


def _capitalised(part: str) -> bool:
    letters = part.lstrip(_EDGE)
    return bool(letters) and letters[0].isupper()


def is_forbidden_break(before: str, after: str) -> bool:
    """Whether a line break between these two tokens splits a pair the style guide keeps together."""
    if is_sentence_end(before) or is_clause_end(before):
        return False
    left, right = _last_part(before), _first_part(after)
    left_bare, right_bare = _bare(left), _bare(right)
    right_is_function = right_bare in CONJUNCTIONS or right_bare in PREPOSITIONS
    if left.lower() in NUMBERED_ABBREVIATIONS and right_bare[:1].isdecimal():  # "Fig. 7", "p. 112"
        return True
    if left_bare in DETERMINERS:  # article + noun
        return True
    if _capitalised(left) and _capitalised(right) and left_bare != "i":  # first + last name
        return True
    if left_bare in SUBJECT_PRONOUNS and not right_is_function:  # pronoun + verb
        return True
    if left_bare in AUXILIARIES and not right_is_function and right_bare not in ARTICLES:  # auxiliary + verb
        return True
    # number + unit
    return bool(_RE_NUMBER.match(left_bare)) and not right_is_function and right_bare not in DETERMINERS


def break_cost(before: str, after: str) -> float:
    """Cost of a line or cue break between two tokens: after punctuation and before function words is good."""
    if is_sentence_end(before):
        return 0.0
    if is_clause_end(before):
        return COST_AT_PUNCTUATION
    if is_forbidden_break(before, after):
        return COST_FORBIDDEN_BREAK
    right = _bare(_first_part(after))
    if right in CONJUNCTIONS or right in PREPOSITIONS:
        return COST_BEFORE_FUNCTION_WORD
    return COST_PLAIN_BREAK


# ----------------------------------------------------------------------------------------------------------
# Times


def effective_spans(words: list[WordTiming]) -> dict[int, tuple[int, int]]:
    """Each word's (start_ms, end_ms) by word index, untimed words placed between their timed neighbours.

    Untimed runs share the silence between their neighbours in proportion to their spoken length; a run
    with no neighbour on one side gets ~0.3 s a word. Starts are made non-decreasing, every end >= its
    start.
    """
    ordered = sorted(words, key=lambda w: w.index)
    starts: list[float | None] = []
    ends: list[float | None] = []
    last_start = 0.0
    for w in ordered:
        if w.timed:
            start = max(float(w.start_ms), last_start)
            starts.append(start)
            ends.append(max(float(w.end_ms), start))
            last_start = start
        else:
            starts.append(None)
            ends.append(None)

    k = 0
    while k < len(ordered):
        if starts[k] is not None:
            k += 1
            continue
        run_end = k
        while run_end < len(ordered) and starts[run_end] is None:
            run_end += 1
        run = range(k, run_end)
        nominal = NOMINAL_MS_PER_WORD * len(run)
        prev_end = ends[k - 1] if k > 0 else None
        next_start = starts[run_end] if run_end < len(ordered) else None
        if prev_end is None and next_start is None:
            left, right = 0.0, float(nominal)
        elif prev_end is None:
            left, right = max(0.0, next_start - nominal), next_start
        elif next_start is None:
            left, right = prev_end, prev_end + nominal
        else:
            left, right = prev_end, max(prev_end, next_start)
        weights = [len(ordered[i].spoken.replace(" ", "")) + 1 for i in run]
        unit = (right - left) / sum(weights)
        cursor = left
        for i, weight in zip(run, weights):
            starts[i], ends[i] = cursor, cursor + weight * unit
            cursor += weight * unit
        k = run_end
    return {w.index: (round(s), round(e)) for w, s, e in zip(ordered, starts, ends)}


# ----------------------------------------------------------------------------------------------------------
# Lines


def layout_lines(texts: list[str], profile: SubtitleProfile) -> tuple[list[str], float]:
    """Break a cue's tokens into lines: one line if it fits, else the fewest lines that fit, best breaks.

    Returns the lines and the layout cost; when nothing fits, a greedy wrap that the caller reports.
    """
    max_chars = profile.max_chars_per_line
    whole = " ".join(texts)
    if len(whole) <= max_chars or len(texts) == 1:
        return [whole], 0.0
    n = len(texts)
    # widths[a][b]: the length of texts[a:b] joined by spaces
    prefix = [0]
    for t in texts:
        prefix.append(prefix[-1] + len(t))

    def width(a: int, b: int) -> int:
        return prefix[b] - prefix[a] + (b - a - 1)

    for line_count in range(2, min(profile.max_lines, n) + 1):
        # Each break drops a space, so the mean line length is fixed by line_count and balance can be scored
        # line by line inside the search (scored afterwards, it could not pick among breaks of equal cost).
        mean = (width(0, n) - (line_count - 1)) / line_count
        # best[l][b]: cheapest layout of texts[:b] in l lines, each fitting, balance included
        inf = math.inf
        best = [[inf] * (n + 1) for _ in range(line_count + 1)]
        back = [[0] * (n + 1) for _ in range(line_count + 1)]
        best[0][0] = 0.0
        for lines in range(1, line_count + 1):
            for b in range(1, n + 1):
                for a in range(lines - 1, b):
                    if best[lines - 1][a] == inf or width(a, b) > max_chars:
                        continue
                    balance = (width(a, b) - mean) ** 2 / max_chars**2 * 8  # balanced lines read best
                    cost = best[lines - 1][a] + (break_cost(texts[a - 1], texts[a]) if a > 0 else 0.0) + balance
                    if cost < best[lines][b]:
                        best[lines][b], back[lines][b] = cost, a
        if best[line_count][n] < inf:
            bounds = [n]
            for lines in range(line_count, 0, -1):
                bounds.append(back[lines][bounds[-1]])
            bounds.reverse()
            lengths = [width(a, b) for a, b in pairwise(bounds)]
            # A bottom-heavy pair is preferred to a top-heavy one.
            top_heavy = 0.5 if lengths[0] > lengths[-1] else 0.0
            lines = [" ".join(texts[a:b]) for a, b in pairwise(bounds)]
            return lines, best[line_count][n] + top_heavy
    lines: list[str] = []
    current: list[str] = []
    for t in texts:
        if current and len(" ".join([*current, t])) > max_chars:
            lines.append(" ".join(current))
            current = []
        current.append(t)
    lines.append(" ".join(current))
    return lines, COST_PLAIN_BREAK * (len(lines) - 1)


# ----------------------------------------------------------------------------------------------------------
# Cues


@dataclass
class _Candidate:
    cost: float
    lines: list[str]
    start_ms: int
    end_ms: int
    violations: list[str]


def _evaluate(
    texts: list[str], starts: list[int], ends: list[int], i: int, j: int, profile: SubtitleProfile
) -> _Candidate:
    """Lay out and time the cue of words i..j-1; the next cue (if any) starts at word j.

    Times are counted in frames of the profile's rate: in on the frame where the speech starts, out at the first
    frame after it ends, lingering up to ``linger_frames`` for reading time (the minimum duration may use more of
    the silence), always ``min_gap_frames`` before the next cue's in-frame. The cue's times are those frames'
    starts on the written-time grid, so every subtitle format writes them exactly.
    """
    lines, cost = layout_lines(texts[i:j], profile)
    chars = len(" ".join(texts[i:j]))
    first = profile.frame_at(starts[i])
    speech_end = profile.first_frame_from(max(ends[i:j]))
    next_first = profile.frame_at(starts[j]) if j < len(starts) else None

    last = speech_end
    reading_end = first + math.ceil(chars * profile.rate / Fraction(profile.max_cps).limit_denominator(10**6))
    if reading_end > last:  # linger for reading time, at most linger_frames into the silence
        last = min(reading_end, speech_end + profile.linger_frames)
    last = max(last, first + profile.min_duration_frames)  # the minimum duration may use the silence that follows
    last = min(last, max(speech_end, first + profile.max_duration_frames))
    if next_first is not None:
        last = min(last, next_first - profile.min_gap_frames)
    last = max(last, first + 1)
    start, end = profile.frame_time_ms(first), profile.frame_time_ms(last)
    next_start = profile.frame_time_ms(next_first) if next_first is not None else None

    violations = rule_violations(profile, start, end, lines, next_start)
    if "chars_per_line" in violations:
        cost += COST_VIOLATION + 5 * sum(max(0, len(ln) - profile.max_chars_per_line) for ln in lines)
    if "max_lines" in violations:
        cost += COST_VIOLATION * (len(lines) - profile.max_lines)
    frames = last - first
    if "min_duration" in violations:
        cost += COST_VIOLATION + profile.frames_ms(profile.min_duration_frames - frames) / 10
    if "max_duration" in violations:
        cost += COST_VIOLATION + profile.frames_ms(frames - profile.max_duration_frames) / 10
    if "cps" in violations:
        # Proportional to the excess so that merging two fast cues is no cheaper than keeping them apart.
        cost += 10 + 2 * (chars - profile.max_cps * profile.frames_ms(frames) / 1000)
    if "min_gap" in violations:
        cost += COST_VIOLATION
    return _Candidate(cost, lines, start, end, violations)


def segment_cues(words: list[WordTiming], profile: SubtitleProfile | str | None = None,
                 breaks_after: Collection[int] = ()) -> list[Cue]:
    """Group words (in index order) into cues numbered from 1, following ``profile`` (default netflix-adult).

    Cues split at sentence ends and pauses; a pause of ``hard_pause_ms`` always splits, and so does the end of a
    word whose index is in ``breaks_after`` (a long item's paragraph and chapter-heading ends). Within those, the
    cheapest segmentation wins: breaks after punctuation and before conjunctions/prepositions are cheap,
    breaks inside article+noun, first+last name, pronoun+verb, auxiliary+verb and number+unit are costly,
    and every profile rule broken costs much more, so cues are merged, split or extended into silence
    wherever the speech allows. Rules a cue still breaks are listed in ``Cue.violations``. Untimed words are
    kept and placed between their neighbours (:func:`effective_spans`).
    """
    if profile is None or isinstance(profile, str):
        profile = get_profile(profile or DEFAULT_PROFILE)
    ordered = sorted(words, key=lambda w: w.index)
    if not ordered:
        return []
    spans = effective_spans(ordered)
    texts = [w.text for w in ordered]
    starts = [spans[w.index][0] for w in ordered]
    ends = [spans[w.index][1] for w in ordered]
    n = len(ordered)

    # Cost of ending a cue after word k, and of keeping words k and k+1 in one cue.
    boundary = [0.0] * n
    keep_together = [0.0] * n
    for k in range(n - 1):
        pause = starts[k + 1] - ends[k]
        cost = break_cost(texts[k], texts[k + 1])
        sentence_end = is_sentence_end(texts[k])
        if pause >= profile.hard_pause_ms or ordered[k].index in breaks_after:
            boundary[k], keep_together[k] = 0.0, math.inf
            continue
        if pause >= profile.pause_split_ms and cost < COST_FORBIDDEN_BREAK:
            cost = 0.0
        boundary[k] = cost * CUE_BREAK_WEIGHT
        if sentence_end or pause >= profile.pause_split_ms:
            keep_together[k] = COST_UNSPLIT_SENTENCE

    capacity = profile.max_chars_per_line * profile.max_lines
    best = [math.inf] * (n + 1)
    choice: list[tuple[int, _Candidate] | None] = [None] * (n + 1)
    best[0] = 0.0
    for j in range(1, n + 1):
        inner = 0.0
        chars = -1
        for i in range(j - 1, -1, -1):
            if i < j - 1:
                inner += keep_together[i]
                if inner == math.inf:
                    break
            chars += len(texts[i]) + 1
            if i < j - 1 and (chars > capacity or ends[j - 1] - starts[i] > profile.max_duration_ms):
                break  # longer cues only add violations; a shorter split is always available
            candidate = _evaluate(texts, starts, ends, i, j, profile)
            total = best[i] + COST_PER_CUE + candidate.cost + inner + (boundary[j - 1] if j < n else 0.0)
            if total < best[j]:
                best[j], choice[j] = total, (i, candidate)

    cues: list[Cue] = []
    j = n
    while j > 0:
        i, candidate = choice[j]
        cues.append(
            Cue(
                index=0,
                start_ms=candidate.start_ms,
                end_ms=candidate.end_ms,
                lines=candidate.lines,
                word_indexes=[w.index for w in ordered[i:j]],
                violations=candidate.violations,
            )
        )
        j = i
    cues.reverse()
    return [cue.model_copy(update={"index": number}) for number, cue in enumerate(cues, 1)]
