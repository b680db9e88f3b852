"""Text normalisation: the script as written -> the words a synthesizer speaks and an aligner times.

Each whitespace token of the script keeps a mapping to its spoken words ("$5.20," -> five dollars twenty cents),
so timings come back on the original tokens and subtitles show the script's own text and punctuation.
Numbers, currency, percentages, ordinals, years, times and common abbreviations go through num2words.
"""

from __future__ import annotations

import re
import unicodedata

from num2words import num2words

from narration.languages import DATE_ORDER, DEFAULT_LOCALE
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
    "fig.": "figure",
    "figs.": "figures",
    "p.": "page",
    "pp.": "pages",
    "vol.": "volume",
    "ch.": "chapter",
    "sec.": "section",
    "eq.": "equation",
    "art.": "article",
    "km": "kilometres",
    "kg": "kilograms",
    "&": "and",
    "+": "plus",
    "=": "equals",
    "@": "at",
}
# Abbreviations that name a numbered thing ("Fig. 7", "p. 112"): never a sentence end, never split from the number.
NUMBERED_ABBREVIATIONS = frozenset({"fig.", "figs.", "p.", "pp.", "no.", "vol.", "ch.", "sec.", "eq.", "art."})
CURRENCIES = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
              "€": ("euro", "euros", "cent", "cents")}

# The script's punctuation rules, one home for the synthesizers (where to pause, how to split the text), the aligners
# (sentence windows) and the subtitles (where a cue or line may end). A mark counts behind any closing quotes or
# brackets ('end."', "(so.)"); the period of an abbreviation ("Dr.", "etc.") ends no sentence and makes no pause.
CLOSERS = "\"'”’)]}»"
OPENERS = "\"'“‘([{«"
SENTENCE_ENDS = ".!?…"
PAUSE_MARKS = ".,;:!?"  # the marks a synthesizer is given after a token's last word, so it pauses and intones
CLAUSE_ENDS = ",;:—–-"  # where a subtitle line or cue breaks well inside a sentence

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
_RE_SLASH_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})$")
_RE_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_RE_EMAIL = re.compile(r"^([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)$")
_EMAIL_SYMBOLS = {".": "dot", "_": "underscore", "-": "dash", "+": "plus", "%": "percent"}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
_SCALE = {"k": "thousand", "m": "million", "bn": "billion", "million": "million", "billion": "billion"}


# Latin letters that NFKD does not decompose to ASCII, and typographic apostrophes.
_TRANSLITERATE = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
                                "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
                                "ı": "i", "’": "'", "‘": "'", "ʼ": "'"})


def _fold(text: str) -> str:
    """``text`` with Latin letters folded to ASCII (diacritics dropped) and every other non-ASCII character
    (em-dashes, ellipses, letters of other scripts) turned into a space, so "what—no" is two words."""
    out = []
    for ch in unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE)):
        if ch.isascii():
            out.append(ch)
        elif not unicodedata.category(ch).startswith("M"):  # combining accents vanish, anything else separates
            out.append(" ")
    return "".join(out)


def _words(text: str) -> list[str]:
    """Lowercase letters-and-apostrophes words of ``text`` (diacritics folded)."""
    return [w.strip("'") for w in _RE_WORD_CHARS.split(_fold(text).lower()) if w.strip("'")]


def _is_foreign_letter(ch: str) -> bool:
    """A letter that does not fold to Latin (Hebrew, Arabic, Cyrillic, CJK...): no backend here speaks it."""
    return ch.isalpha() and not _fold(ch).strip()


def script_name(ch: str) -> str:
    """The Unicode script a letter belongs to, as its character name starts ("HEBREW", "ARABIC", "CJK")."""
    name = unicodedata.name(ch, "")
    return name.split(" ")[0] if name else f"U+{ord(ch):04X}"


def foreign_runs(text: str) -> list[str]:
    """The runs of ``text`` written in a script the backends cannot speak (combining marks kept inside)."""
    runs, current = [], ""
    for ch in text:
        if _is_foreign_letter(ch) or (current and unicodedata.category(ch).startswith("M")):
            current += ch
        elif current:
            runs.append(current)
            current = ""
    if current:
        runs.append(current)
    return runs


def unspeakable_scripts(text: str) -> list[str]:
    """Names of the scripts in ``text`` that the backends cannot speak, in order of first appearance."""
    names: list[str] = []
    for ch in text:
        if _is_foreign_letter(ch):
            name = script_name(ch)
            name = name if len(name) <= 3 else name.title()  # "CJK" stays, "HEBREW" reads "Hebrew"
            if name not in names:
                names.append(name)
    return names


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


def _date(year: int, month: int, day: int, locale: str) -> str | None:
    """A calendar date read the locale's way ("March fourth, twenty twenty-five" / "the fourth of March ..."),
    or None when it is not a valid date."""
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    year_words = num2words(year, to="year")
    ordinal = num2words(day, to="ordinal")
    if DATE_ORDER.get(locale, DATE_ORDER[DEFAULT_LOCALE]) == "dmy":
        return f"the {ordinal} of {MONTHS[month - 1]} {year_words}"
    return f"{MONTHS[month - 1]} {ordinal}, {year_words}"


def _slash_date(first: str, second: str, year: str, locale: str) -> str | None:
    a, b, y = int(first), int(second), int(year)
    if len(year) == 2:
        y += 2000
    month, day = (b, a) if DATE_ORDER.get(locale, DATE_ORDER[DEFAULT_LOCALE]) == "dmy" else (a, b)
    if month > 12 and day <= 12:  # 25/12/2025 in a US script can only be day first
        month, day = day, month
    return _date(y, month, day, locale)


def _email(local: str, domain: str) -> str:
    """jane.doe@example.org -> "jane dot doe at example dot org" (digits as numbers, symbols by name)."""
    def part(text: str) -> str:
        pieces = re.findall(r"[A-Za-z]+|\d+|.", text)
        return " ".join(_EMAIL_SYMBOLS.get(p, p) if not p.isdecimal() else _cardinal(p) for p in pieces)
    return f"{part(local)} at {part(domain)}"


def speak_token(core: str, locale: str = DEFAULT_LOCALE) -> str:
    """The spoken form of one token with its edge punctuation removed; ``locale`` (en, en-us, en-gb) decides
    reading conventions such as the order of day and month in ``3/4/2025``."""
    lowered = core.lower()
    if lowered in ABBREVIATIONS:
        return ABBREVIATIONS[lowered]
    if (m := _RE_SLASH_DATE.match(core)) and (spoken := _slash_date(*m.groups(), locale)):
        return spoken
    if (m := _RE_ISO_DATE.match(core)) and (spoken := _date(*map(int, m.groups()), locale)):
        return spoken
    if m := _RE_EMAIL.match(core):
        return _email(*m.groups())
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


def bare_word(text: str) -> str:
    """A token as written without the punctuation at its edges ("(SQL)," -> "SQL"): what lexicon entries match."""
    return text.strip(_EDGE_PUNCT)


def normalize_script(text: str, locale: str = DEFAULT_LOCALE) -> list[ScriptToken]:
    """Split the script into tokens, each with the words it is spoken as.

    A token with nothing speakable (a dash, an emoji, a word in a script no backend speaks) is merged into its
    neighbour so that every token has at least one spoken word; the script text is never lost, and words of an
    unspeakable script are listed in the token's ``unspoken``.
    """
    tokens: list[ScriptToken] = []
    pending_prefix = ""
    pending_unspoken: list[str] = []
    for raw in text.split():
        core = _strip_edges(raw)
        spoken = _words(speak_token(core, locale)) if core else []
        unspoken = foreign_runs(raw)
        if not spoken:
            if tokens:
                last = tokens[-1]
                tokens[-1] = last.model_copy(update={"original": f"{last.original} {raw}",
                                                     "unspoken": [*last.unspoken, *unspoken]})
            else:
                pending_prefix = f"{pending_prefix}{raw} "
                pending_unspoken.extend(unspoken)
            continue
        tokens.append(ScriptToken(index=len(tokens), original=pending_prefix + raw, spoken=spoken,
                                  unspoken=[*pending_unspoken, *unspoken]))
        pending_prefix = ""
        pending_unspoken = []
    return tokens


def unspoken_words(tokens: list[ScriptToken]) -> list[str]:
    """Every part of the script that will not be heard (words in a script no backend speaks), in order."""
    return [word for token in tokens for word in token.unspoken]


def spoken_text(tokens: list[ScriptToken]) -> str:
    return " ".join(w for t in tokens for w in t.spoken)


def is_abbreviation(text: str) -> bool:
    """Whether the token ``text`` (as written; a merged token's last part counts) is an abbreviation such as "Dr."
    or "(etc.)"."""
    last_part = "".join(text.split()[-1:])
    return last_part.rstrip(CLOSERS).lstrip(OPENERS + CLOSERS).lower() in ABBREVIATIONS


def final_mark(text: str) -> str:
    """The character ``text`` ends with behind any closing quotes and brackets ("" when there is none)."""
    return text.rstrip(CLOSERS)[-1:]


def is_sentence_end(text: str) -> bool:
    """Ends with . ! ? or … (closing quotes and brackets allowed), and is not an abbreviation such as "Dr."."""
    mark = final_mark(text)
    return bool(mark) and mark in SENTENCE_ENDS and not is_abbreviation(text)


def is_clause_end(text: str) -> bool:
    """Ends with a comma, semicolon, colon or dash (closing quotes and brackets allowed)."""
    mark = final_mark(text)
    return bool(mark) and mark in CLAUSE_ENDS


def pause_mark(text: str) -> str:
    """The mark a synthesizer is given after the token's last spoken word (a comma, a full stop...), or "": none,
    or the period of an abbreviation."""
    mark = final_mark(text)
    return mark if mark and mark in PAUSE_MARKS and not is_abbreviation(text) else ""


def sentences(tokens: list[ScriptToken]) -> list[list[ScriptToken]]:
    """The tokens grouped into sentences, each ending at a token that :func:`is_sentence_end` (the last one may
    end without a mark)."""
    groups: list[list[ScriptToken]] = [[]]
    for token in tokens:
        groups[-1].append(token)
        if is_sentence_end(token.original):
            groups.append([])
    return [group for group in groups if group]
