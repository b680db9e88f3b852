"""Text normalisation keeps a mapping from every script token to its spoken words."""

from __future__ import annotations

import pytest

from narration.normalize import (
    is_abbreviation,
    is_clause_end,
    is_sentence_end,
    normalize_script,
    pause_mark,
    sentences,
    spoken_text,
)


@pytest.mark.parametrize("text, expected", [
    ("$5.20", ["five", "dollars", "twenty", "cents"]),
    ("£3bn", ["three", "billion", "pounds"]),
    ("50%", ["fifty", "percent"]),
    ("1984", ["nineteen", "eighty", "four"]),
    ("2,500", ["two", "thousand", "five", "hundred"]),
    ("3rd", ["third"]),
    ("10:30pm", ["ten", "thirty", "p", "m"]),
    ("1990s", ["nineteen", "nineties"]),
    ("Dr.", ["doctor"]),
    ("&", ["and"]),
    ("well-known", ["well", "known"]),
    ("3.14", ["three", "point", "one", "four"]),
    ("10-20", ["ten", "to", "twenty"]),
    ("Café", ["cafe"]),
])
def test_token_spoken_forms(text, expected):
    tokens = normalize_script(text)
    assert len(tokens) == 1 and tokens[0].spoken == expected and tokens[0].original == text


def test_original_tokens_keep_their_punctuation_and_order():
    tokens = normalize_script('He said: "It costs $5, not 50%!"')
    assert [t.original for t in tokens] == ["He", "said:", '"It', "costs", "$5,", "not", "50%!\""]
    assert [t.index for t in tokens] == list(range(len(tokens)))
    assert spoken_text(tokens) == "he said it costs five dollars not fifty percent"


def test_unspeakable_tokens_are_merged_not_lost():
    tokens = normalize_script("— Hello — world 🙂")
    assert [t.original for t in tokens] == ["— Hello —", "world 🙂"]
    assert " ".join(t.original for t in tokens) == "— Hello — world 🙂"


def test_nothing_speakable_gives_no_tokens():
    assert normalize_script("... !!! 🙂") == []


def test_sentences_end_at_terminal_marks_behind_closers_but_not_at_abbreviations():
    tokens = normalize_script('He said "Stop." (Then left.) “Dr. Smith waited… [Why?] See {fig.} 7 Prof. X')
    assert [[t.original for t in s] for s in sentences(tokens)] == [
        ["He", "said", '"Stop."'], ["(Then", "left.)"], ["“Dr.", "Smith", "waited…"], ["[Why?]"],
        ["See", "{fig.}", "7", "Prof.", "X"]]


def test_an_abbreviation_counts_inside_brackets_and_as_a_merged_tokens_last_part():
    assert is_abbreviation("(etc.)") and is_abbreviation("“Dr.") and is_abbreviation("— Dr.")
    assert not is_abbreviation("end.") and not is_sentence_end("“Dr.") and not is_sentence_end("— Dr.")
    assert is_sentence_end("end.”") and is_sentence_end("so…") and not is_sentence_end("") and not is_sentence_end("a")


def test_pause_marks_and_clause_ends():
    assert [pause_mark(t) for t in ["a,", "b;)", "c.", "d?”", "Dr.", "e…", "f", "g—"]] == [
        ",", ";", ".", "?", "", "", "", ""]
    assert [is_clause_end(t) for t in ["a,", "b:”", "c —", "d-", "e.", "f"]] == [True, True, True, True, False, False]
