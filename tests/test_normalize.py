"""Text normalisation keeps a mapping from every script token to its spoken words."""

from __future__ import annotations

import pytest

from narration.normalize import normalize_script, spoken_text


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
