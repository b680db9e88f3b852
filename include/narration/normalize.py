"""Text normalisation: the script as written -> the words a synthesizer speaks and an aligner times.

Each whitespace token of the script keeps a mapping to its spoken words ("$5.20," -> five dollars twenty cents),
so timings come back on the original tokens and subtitles show the script's own text and punctuation.
Numbers, currency, percentages, ordinals, years, times and common abbreviations go through num2words.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

from narration.schema import ScriptToken

ABBREVIATIONS = {
    "dr.": "doctor",
    "mr.": "mister",
    "mrs.": "missus",
    "ms.": "miz",
    "prof.": "professor",
    "st.": "saint",
    "jr.": "junior",
    "sr.": "senior",
    "vs.": "versus",
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "approx.": "approximately",
    "no.": "number",
    "mt.": "mount",
    "ft.": "feet",
    "km": "kilometres",
    "kg": "kilograms",
    "&": "and",
    "+": "plus",
    "=": "equals",
    "@": "at",
}
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
              "€": ("euro", "euros", "cent", "cents")}

_EDGE_PUNCT = "\"'“”‘’«»()[]{}<>,;:!?.…—–-*_/\\|~^`"
_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_RE_CURRENCY = re.compile(rf"^([$£€])({_NUMBER})(k|m|bn|million|billion)?$", re.IGNORECASE)
_RE_PERCENT = re.compile(rf"^({_NUMBER})%$")
_RE_ORDINAL = re.compile(r"^(\d+)(st|nd|rd|th)$", re.IGNORECASE)
_RE_TIME = re.compile(r"^(\d{1,2}):(\d{2})(am|pm)?$", re.IGNORECASE)
_RE_RANGE = re.compile(rf"^({_NUMBER})[-–]({_NUMBER})$")
_RE_NUMBER = re.compile(rf"^{_NUMBER}$")
_RE_DECADE = re.compile(r"^(\d{2,4})'?s$")
_RE_WORD_CHARS = re.compile(r"[^a-z']+")
_SCALE = {"k": "thousand", "m": "million", "bn": "billion", "million": "million", "billion": "billion"}


def _words(text: str) -> list[str]:
    """Lowercase letters-and-apostrophes words of ``text`` (diacritics folded)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return [w.strip("'") for w in _RE_WORD_CHARS.split(folded) if w.strip("'")]


def _cardinal(number: str) -> str:
    number = number.replace(",", "")
    if "." in number:
        whole, frac = number.split(".", 1)
        return f"{num2words(int(whole or 0))} point {' '.join(num2words(int(d)) for d in frac)}"
    return num2words(int(number))


def _number(number: str) -> str:
    plain = number.replace(",", "")
    if "," not in number and "." not in number and len(plain) == 4 and 1100 <= int(plain) <= 2099:
        return num2words(int(plain), to="year")
    return _cardinal(number)


def _currency(symbol: str, amount: str, scale: str | None) -> str:
    one, many, sub_one, sub_many = CURRENCIES[symbol]
    plain = amount.replace(",", "")
    if scale:
        return f"{_cardinal(plain)} {_SCALE[scale.lower()]} {many}"
    whole, _, frac = plain.partition(".")
    whole_n = int(whole or 0)
    spoken = f"{num2words(whole_n)} {one if whole_n == 1 else many}"
    if frac:
        cents = int((frac + "0")[:2])
        if cents:
            spoken += f" {num2words(cents)} {sub_one if cents == 1 else sub_many}"
    return spoken


def _time(hours: str, minutes: str, meridiem: str | None) -> str:
    h, m = int(hours), int(minutes)
    spoken = num2words(h)
    if m == 0:
        spoken += " o'clock" if not meridiem else ""
    elif m < 10:
        spoken += f" oh {num2words(m)}"
    else:
        spoken += f" {num2words(m)}"
    if meridiem:
        spoken += " " + " ".join(meridiem.lower())
    return spoken


def speak_token(core: str) -> str:
    """The spoken form of one token with its edge punctuation removed."""
    lowered = core.lower()
    if lowered in ABBREVIATIONS:
        return ABBREVIATIONS[lowered]
    if m := _RE_CURRENCY.match(core):
        return _currency(m.group(1), m.group(2), m.group(3))
    if m := _RE_PERCENT.match(core):
        return f"{_cardinal(m.group(1))} percent"
    if m := _RE_ORDINAL.match(core):
        return num2words(int(m.group(1)), to="ordinal")
    if m := _RE_TIME.match(core):
        return _time(*m.groups())
    if m := _RE_RANGE.match(core):
        return f"{_number(m.group(1))} to {_number(m.group(2))}"
    if m := _RE_DECADE.match(core):
        base = _number(m.group(1))
        return base[:-1] + "ies" if base.endswith("y") else base + "s"
    if _RE_NUMBER.match(core):
        return _number(core)
    # Mixed letters and digits ("MP3", "3D", "COVID-19"): speak the digits, keep the letters.
    if any(ch.isdecimal() for ch in core):
        parts = re.findall(r"\d+(?:\.\d+)?|[^\d]+", core)
        return " ".join(_number(p) if p[0].isdecimal() else p for p in parts)
    return core


def _strip_edges(token: str) -> str:
    core = token.strip(_EDGE_PUNCT)
    # Keep a trailing period that belongs to a known abbreviation ("Dr.").
    if token.lower().rstrip(_EDGE_PUNCT.replace(".", "")) in ABBREVIATIONS:
        return token.lower().rstrip(_EDGE_PUNCT.replace(".", "")).lstrip(_EDGE_PUNCT)
    # Leading currency symbols are part of the token, not punctuation.
    stripped_lead = token.lstrip(_EDGE_PUNCT)
    if stripped_lead[:1] in CURRENCIES:
        core = stripped_lead.rstrip(_EDGE_PUNCT)
    if token.rstrip(_EDGE_PUNCT).endswith("%") and not core.endswith("%"):
        core = token.strip(_EDGE_PUNCT.replace("%", ""))
    return core


def normalize_script(text: str) -> list[ScriptToken]:
    """Split the script into tokens, each with the words it is spoken as.

    A token with nothing speakable (a dash, an emoji) is merged into its neighbour so that every token has at
    least one spoken word; the script text is never lost.
    """
    tokens: list[ScriptToken] = []
    pending_prefix = ""
    for raw in text.split():
        core = _strip_edges(raw)
        spoken = _words(speak_token(core)) if core else []
        if not spoken:
            if tokens:
                last = tokens[-1]
                tokens[-1] = last.model_copy(update={"original": f"{last.original} {raw}"})
            else:
                pending_prefix = f"{pending_prefix}{raw} "
            continue
        tokens.append(ScriptToken(index=len(tokens), original=pending_prefix + raw, spoken=spoken))
        pending_prefix = ""
    return tokens


def spoken_text(tokens: list[ScriptToken]) -> str:
    return " ".join(w for t in tokens for w in t.spoken)
