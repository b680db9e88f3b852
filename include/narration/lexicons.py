"""Pronunciation lexicons: W3C PLS 1.0 files, or a simple CSV form, stored at ``lexicons/<name>.pls|.csv``.

A lexicon is read and checked whole (file, line, entry and reason for every refusal); at planning its entries
that match an item's words or phrases become the item's ``pronunciations``, and :func:`apply_pronunciations` turns
them into what the backends speak: an alias replaces the spoken words, a phoneme entry adds IPA to the token, and a
phrase's tokens become one token.
"""

from __future__ import annotations

import csv
import io
import posixpath
import unicodedata
from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from narration.errors import ConfigurationFault
from narration.languages import base_language
from narration.layout import ID_PATTERN, LEXICONS, lexicon_key
from narration.longform import token_paragraphs
from narration.normalize import bare_word, normalize_script
from narration.schema import ItemSpec, Pronunciation, ScriptToken
from narration.storage import Storage

PLS_NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ALPHABETS = ("ipa", "x-sampa")
# The stored suffix per upload suffix: PLS (also as .xml) or the simple CSV form.
FORMATS = {".pls": ".pls", ".xml": ".pls", ".csv": ".csv"}
STORED_SUFFIXES = (".pls", ".csv")
CSV_COLUMNS = ("grapheme", "alias", "phoneme", "alphabet")
MAX_LEXICON_BYTES = 1 << 20
MAX_PHRASE_WORDS = 10  # PLS: a grapheme is "a word or short phrase"; also bounds the matching scan

# IPA here: lowercase Latin letters, the IPA letters outside ASCII, modifier letters (stress, length, aspiration),
# combining diacritics (tie bar, syllabic, voiceless) and the syllable break.
_IPA_BLOCKS = ((0x0250, 0x02FF), (0x0300, 0x036F), (0x1D00, 0x1DBF))
_IPA_EXTRA = set("abcdefhijklmnopqrstuvwxyzæçðøħŋœθβχɸ.‿")
# Common typing variants, made canonical so that every backend's table sees one spelling.
_IPA_CANONICAL = str.maketrans({"g": "ɡ"})
_IPA_HINTS = {"'": "use ˈ (U+02C8) for primary stress", ",": "use ˌ (U+02CC) for secondary stress",
              ":": "use ː (U+02D0) for length", "@": "use ə; '@' is X-SAMPA (alphabet=\"x-sampa\")"}


class LexiconError(ConfigurationFault, ValueError):
    """A lexicon that cannot be used, naming its file, line and entry. A configuration fault: the batch chose the
    lexicon, and no retry changes its content, so planning fails at once rather than narrate words wrongly."""

    def __init__(self, source: str, line: int | None, entry: str | None, reason: str):
        self.source, self.line, self.entry, self.reason = source, line, entry, reason
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {f'entry {entry!r}: ' if entry else ''}{reason}")


@dataclass(frozen=True)
class LexiconEntry:
    grapheme: str
    alias: str | None
    phonemes: str | None  # IPA
    line: int

    @property
    def reading(self) -> tuple[str | None, str | None]:
        return self.alias, self.phonemes


@dataclass
class Lexicon:
    name: str
    source: str  # what error messages call the file: its S3 URI or local path
    format: str  # "pls" | "csv"
    alphabet: str | None = None
    language: str | None = None
    entries: dict[str, LexiconEntry] = field(default_factory=dict)  # match_key(grapheme) -> entry

    def applies_to(self, language: str) -> bool:
        """Whether the lexicon is for ``language`` (a tag such as en-GB): the primary language of its xml:lang
        (PLS: the language the lexicon is relevant for); a lexicon without one (the CSV form) is for any."""
        return self.language is None or base_language(self.language) == base_language(language)

    def add(self, entry: LexiconEntry) -> None:
        key = match_key(entry.grapheme)
        earlier = self.entries.get(key)
        if earlier is not None and earlier.reading != entry.reading:
            raise LexiconError(self.source, entry.line, entry.grapheme,
                               f"conflicts with the entry for {earlier.grapheme!r} at line {earlier.line} "
                               f"({_describe(earlier)} against {_describe(entry)})")
        self.entries.setdefault(key, entry)


class LexiconInfo(BaseModel):
    """What ``narration lexicons list|show`` reports of a stored lexicon."""

    name: str
    key: str
    format: str
    alphabet: str | None
    language: str | None
    entries: int
    aliases: int
    phonemes: int
    error: str | None = None  # why a stored lexicon cannot be used (stored without the upload's checks)


def match_key(text: str) -> str:
    """What a grapheme and a run of written tokens are compared by: without the punctuation at the run's edges,
    whitespace collapsed, casefolded ("(New York)," -> "new york"). Punctuation inside the run stays, so
    "New, York" is not "New York" while "St. Ives" still matches "St. Ives"."""
    return " ".join(bare_word(unicodedata.normalize("NFC", text)).split()).casefold()


def find_matches(tokens: list[ScriptToken], keys: Container[str], max_words: int,
                 paragraph_starts: Sequence[int] = ()) -> list[tuple[int, int, str]]:
    """(start, end, key) of each run ``tokens[start:end]`` whose :func:`match_key` is in ``keys``, scanning left
    to right, the longest run winning at each start ("New York City" over "New York" over "New"). A run never
    crosses a paragraph (``paragraph_starts``, as :func:`longform.token_paragraphs` takes them; a chapter heading
    is a paragraph of its own)."""
    paragraphs = token_paragraphs(tokens, list(paragraph_starts))
    matches = []
    start = 0
    while start < len(tokens):
        best = None
        for end in range(start + 1, min(start + max_words, len(tokens)) + 1):  # each token holds a word or more
            if paragraphs[end - 1] != paragraphs[start]:
                break
            key = match_key(" ".join(t.original for t in tokens[start:end]))
            if len(key.split()) > max_words:
                break
            if key in keys:
                best = end, key
        if best is None:
            start += 1
        else:
            matches.append((start, *best))
            start = best[0]
    return matches


def _describe(entry: LexiconEntry) -> str:
    return f"alias {entry.alias!r}" if entry.alias is not None else f"phoneme /{entry.phonemes}/"


def ipa_problem(ipa: str) -> str | None:
    """Why ``ipa`` is not an IPA transcription (the first symbol outside the alphabet), or None."""
    for ch in ipa:
        if ch in _IPA_EXTRA or any(lo <= ord(ch) <= hi for lo, hi in _IPA_BLOCKS):
            continue
        hint = _IPA_HINTS.get(ch)
        return f"symbol {ch!r} (U+{ord(ch):04X}) is not IPA" + (f"; {hint}" if hint else "")
    return None


def to_ipa(text: str, alphabet: str) -> tuple[str | None, str | None]:
    """(IPA, None) for a phoneme string in ``alphabet``, or (None, why not). X-SAMPA is converted with the
    phonecodes library's table; whitespace separates symbols and is dropped (an entry, a phrase's too, is spoken
    as one word)."""
    text = unicodedata.normalize("NFC", text.strip())
    if not text:
        return None, "the phoneme is empty"
    if alphabet == "x-sampa":
        from phonecodes import phonecodes

        if not text.isascii():
            bad = next(ch for ch in text if not ch.isascii())
            return None, f"symbol {bad!r} is not X-SAMPA (X-SAMPA is written in ASCII)"
        ipa = "".join(phonecodes.convert(part, "xsampa", "ipa") for part in text.split())
        problem = ipa_problem(ipa.translate(_IPA_CANONICAL))
        if problem:
            return None, problem.replace("is not IPA", "is not X-SAMPA").split(";")[0]
    else:
        ipa = "".join(text.split())
        problem = ipa_problem(ipa)
        if problem:
            return None, problem
    return unicodedata.normalize("NFC", ipa.translate(_IPA_CANONICAL)), None


def _entry(lexicon: Lexicon, line: int, grapheme: str | None, alias: str | None, phoneme: str | None,
           alphabet: str, reading_line: int | None = None) -> LexiconEntry:
    """One checked entry: a grapheme of a word or a short phrase (whitespace collapsed) and exactly one reading
    (the phoneme converted to IPA)."""
    grapheme = " ".join((grapheme or "").split())
    if not grapheme:
        raise LexiconError(lexicon.source, line, None, "the entry has no grapheme")
    if not match_key(grapheme):
        raise LexiconError(lexicon.source, line, grapheme, "the grapheme is only punctuation; it must hold a word")
    words = grapheme.split()
    for n, word in enumerate(words, start=1):
        if not bare_word(word):
            raise LexiconError(lexicon.source, line, grapheme, f"word {n} of the phrase, {word!r}, is only "
                               "punctuation, which matches no written word")
    if len(words) > MAX_PHRASE_WORDS:
        raise LexiconError(lexicon.source, line, grapheme, f"a phrase of {len(words)} words, over the limit of "
                           f"{MAX_PHRASE_WORDS}")
    if alias is None and phoneme is None:
        raise LexiconError(lexicon.source, line, grapheme, "the entry has neither an alias nor a phoneme")
    if alias is not None:
        alias = " ".join(alias.split())
        if not alias or not [w for t in normalize_script(alias) for w in t.spoken]:
            raise LexiconError(lexicon.source, line, grapheme, "the alias has no speakable word")
        return LexiconEntry(grapheme, alias, None, line)
    if alphabet not in ALPHABETS:
        raise LexiconError(lexicon.source, reading_line or line, grapheme,
                           f"unknown alphabet {alphabet!r}; use one of {', '.join(ALPHABETS)}")
    ipa, problem = to_ipa(phoneme, alphabet)
    if problem:
        raise LexiconError(lexicon.source, reading_line or line, grapheme, f"phoneme {phoneme.strip()!r}: {problem}")
    return LexiconEntry(grapheme, None, ipa, line)


def _text(element) -> str:
    return "".join(element.itertext())


def parse_pls(name: str, data: bytes, source: str) -> Lexicon:
    """A W3C PLS 1.0 document; the first alias or phoneme of a lexeme is its reading (PLS: the preferred one)."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True,
                             remove_pis=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise LexiconError(source, exc.lineno, None, f"not well-formed XML: {exc.msg}") from None
    if root.getroottree().docinfo.doctype:
        line = data[: max(data.find(b"<!DOCTYPE"), 0)].count(b"\n") + 1
        raise LexiconError(source, line, None, "a DOCTYPE is not allowed (entities are not expanded)")
    if root.tag != f"{{{PLS_NAMESPACE}}}lexicon":
        raise LexiconError(source, root.sourceline, None, f"the root element is {root.tag!r}, expected <lexicon> in "
                           f"the PLS namespace {PLS_NAMESPACE}")
    if root.get("version") != "1.0":
        raise LexiconError(source, root.sourceline, None, f"version {root.get('version')!r}; PLS version \"1.0\" "
                           "is required")
    alphabet = root.get("alphabet")
    if alphabet not in ALPHABETS:
        raise LexiconError(source, root.sourceline, None, f"unknown alphabet {alphabet!r} on <lexicon>; use one of "
                           f"{', '.join(ALPHABETS)}")
    if not root.get(XML_LANG):
        raise LexiconError(source, root.sourceline, None, "<lexicon> has no xml:lang")
    lexicon = Lexicon(name, source, "pls", alphabet, root.get(XML_LANG))
    for lexeme in root:
        if not isinstance(lexeme.tag, str):
            continue
        if lexeme.tag == f"{{{PLS_NAMESPACE}}}meta" or lexeme.tag == f"{{{PLS_NAMESPACE}}}metadata":
            continue
        if lexeme.tag != f"{{{PLS_NAMESPACE}}}lexeme":
            raise LexiconError(source, lexeme.sourceline, None, f"unexpected element {lexeme.tag!r} in <lexicon>")
        graphemes, reading = [], None
        for child in lexeme:
            if not isinstance(child.tag, str):
                continue
            local = etree.QName(child).localname if child.tag.startswith(f"{{{PLS_NAMESPACE}}}") else None
            if local == "grapheme":
                graphemes.append((_text(child), child.sourceline))
            elif local in ("alias", "phoneme"):
                reading = reading or (local, _text(child), child.get("alphabet") or alphabet, child.sourceline)
            elif local != "example":
                raise LexiconError(source, child.sourceline, graphemes[0][0].strip() if graphemes else None,
                                   f"unexpected element {child.tag!r} in <lexeme>")
        if not graphemes:
            raise LexiconError(source, lexeme.sourceline, None, "<lexeme> has no <grapheme>")
        kind, value, entry_alphabet, reading_line = reading or (None, None, alphabet, None)
        for grapheme, line in graphemes:
            lexicon.add(_entry(lexicon, line, grapheme, value if kind == "alias" else None,
                               value if kind == "phoneme" else None, entry_alphabet, reading_line))
    return lexicon


def parse_csv(name: str, data: bytes, source: str) -> Lexicon:
    """The simple form: a header of ``grapheme`` and ``alias`` and/or ``phoneme`` (optionally ``alphabet``, ipa
    by default), one entry a row with an alias or a phoneme."""
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise LexiconError(source, line, None, "not valid UTF-8; save the lexicon as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [c.strip().lower() for c in next(reader, [])]
    if "grapheme" not in header or not {"alias", "phoneme"} & set(header) or set(header) - set(CSV_COLUMNS):
        raise LexiconError(source, 1, None, f"the header {header} must name 'grapheme' and 'alias' and/or "
                           f"'phoneme' (allowed columns: {', '.join(CSV_COLUMNS)})")
    lexicon = Lexicon(name, source, "csv")
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise LexiconError(source, start, row[0].strip() or None,
                               f"expected {len(header)} columns, got {len(row)}")
        cells = {column: cell.strip() or None for column, cell in zip(header, row)}
        if cells.get("alias") and cells.get("phoneme"):
            raise LexiconError(source, start, cells["grapheme"], "give an alias or a phoneme, not both")
        lexicon.add(_entry(lexicon, start, cells["grapheme"], cells.get("alias"), cells.get("phoneme"),
                           (cells.get("alphabet") or "ipa").lower()))
    return lexicon


def parse_lexicon(name: str, data: bytes, filename: str, source: str | None = None) -> Lexicon:
    """Read and check a lexicon file; the format follows ``filename``'s suffix (.pls or .xml, .csv)."""
    source = source or filename
    suffix = posixpath.splitext(filename)[1].lower()
    if suffix not in FORMATS:
        raise LexiconError(source, None, None, f"unknown lexicon format {suffix!r}; use .pls (W3C PLS 1.0) or "
                           ".csv")
    if len(data) > MAX_LEXICON_BYTES:
        raise LexiconError(source, None, None, f"{len(data)} bytes, over the limit of {MAX_LEXICON_BYTES}")
    lexicon = (parse_pls if FORMATS[suffix] == ".pls" else parse_csv)(name, data, source)
    if not lexicon.entries:
        raise LexiconError(source, None, None, "the lexicon has no entry")
    return lexicon


def validate_name(name: str) -> None:
    if not ID_PATTERN.match(name) or ".." in name:
        raise LexiconError(name, None, None, "a lexicon name must be letters, digits, '.', '_' or '-' (no '..', "
                           "no '/')")


# ------------------------------------------------------------------------------------------------------------
# The library in S3


def _name_of(key: str) -> str:
    return posixpath.splitext(key[len(LEXICONS):])[0]


class LexiconLibrary:
    """The lexicons in the bucket, listed once and each read and checked at most once (planning uses one)."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._keys: dict[str, str] | None = None
        self._loaded: dict[str, Lexicon] = {}
        self._combined: dict[tuple[str, ...], tuple[dict[str, tuple[str, LexiconEntry]], int]] = {}

    @property
    def keys(self) -> dict[str, str]:
        """Name -> object key of every stored lexicon."""
        if self._keys is None:
            self._keys = {_name_of(k): k for k in sorted(self.storage.list_keys(LEXICONS))
                          if k.endswith(STORED_SUFFIXES) and "/" not in k[len(LEXICONS):]}
        return self._keys

    def load(self, name: str) -> Lexicon:
        if name not in self._loaded:
            key = self.keys.get(name)
            if key is None:
                raise LexiconError(name, None, None, f"no lexicon {name!r} in {self.storage.uri(LEXICONS)}; "
                                   f"lexicons in the library: {', '.join(self.keys) or 'none'}")
            self._loaded[name] = parse_lexicon(name, self.storage.get_bytes(key), key, self.storage.uri(key))
        return self._loaded[name]

    def _merged(self, names: tuple[str, ...]) -> tuple[dict[str, tuple[str, LexiconEntry]], int]:
        """(match key -> (lexicon, entry), the most words of a grapheme) over ``names``, the first lexicon that
        has a grapheme winning; kept per combination, since a batch's lines share a few."""
        if names not in self._combined:
            merged: dict[str, tuple[str, LexiconEntry]] = {}
            for name in names:
                for key, entry in self.load(name).entries.items():
                    merged.setdefault(key, (name, entry))
            self._combined[names] = merged, max((len(key.split()) for key in merged), default=0)
        return self._combined[names]

    def resolve(self, batch: list[str], line: list[str], tokens: list[ScriptToken],
                paragraph_starts: Sequence[int] = ()) -> list[Pronunciation]:
        """The entries that match a word or phrase of ``tokens`` (:func:`find_matches`), once each, in the order
        they come. As in Amazon Polly, the first lexicon of a list that has a grapheme wins; the line's lexicons
        (``line``) are searched before the batch's (``batch``), so a line overrides its batch."""
        merged, max_words = self._merged(tuple(dict.fromkeys([*line, *batch])))
        found: dict[str, Pronunciation] = {}
        for _, _, key in find_matches(tokens, merged, max_words, paragraph_starts):
            if key not in found:
                name, entry = merged[key]
                found[key] = Pronunciation(grapheme=entry.grapheme, alias=entry.alias, phonemes=entry.phonemes,
                                           lexicon=name)
        return list(found.values())


def info(lexicon: Lexicon, key: str) -> LexiconInfo:
    entries = list(lexicon.entries.values())
    return LexiconInfo(name=lexicon.name, key=key, format=lexicon.format, alphabet=lexicon.alphabet,
                       language=lexicon.language, entries=len(entries),
                       aliases=sum(e.alias is not None for e in entries),
                       phonemes=sum(e.phonemes is not None for e in entries))


def upload_lexicon(storage: Storage, name: str, data: bytes, filename: str, *, replace: bool = False
                   ) -> LexiconInfo:
    """Check a lexicon file whole and store it as ``lexicons/<name>.pls|.csv``; nothing is stored when it is
    refused. An existing lexicon of that name (either form) is replaced only with ``replace``."""
    validate_name(name)
    lexicon = parse_lexicon(name, data, filename)
    existing = LexiconLibrary(storage).keys.get(name)
    if existing and not replace:
        raise LexiconError(name, None, None, f"lexicon {name!r} already exists; pass --force (replace=True) "
                           "to replace it")
    key = lexicon_key(name, FORMATS[posixpath.splitext(filename)[1].lower()])
    storage.put_bytes(key, data)
    if existing and existing != key:
        storage.delete(existing)
    return info(lexicon, key)


def list_lexicons(storage: Storage) -> list[LexiconInfo]:
    """Every stored lexicon; one that does not read clean is listed with its error."""
    library = LexiconLibrary(storage)
    listed = []
    for name, key in library.keys.items():
        try:
            listed.append(info(library.load(name), key))
        except LexiconError as exc:
            listed.append(LexiconInfo(name=name, key=key, format=key.rsplit(".", 1)[-1], alphabet=None,
                                      language=None, entries=0, aliases=0, phonemes=0, error=str(exc)))
    return listed


def get_lexicon(storage: Storage, name: str) -> tuple[Lexicon, str]:
    """(the checked lexicon, its key)."""
    library = LexiconLibrary(storage)
    return library.load(name), library.keys[name]


def delete_lexicon(storage: Storage, name: str) -> str:
    library = LexiconLibrary(storage)
    key = library.keys.get(name)
    if key is None:
        raise LexiconError(name, None, None, f"no lexicon {name!r} in {storage.uri(LEXICONS)}")
    storage.delete(key)
    return key


# ------------------------------------------------------------------------------------------------------------
# Applying an item's pronunciations to its tokens


def apply_pronunciations(tokens: list[ScriptToken], pronunciations: list[Pronunciation], locale: str,
                         paragraph_starts: Sequence[int] = ()) -> list[ScriptToken]:
    """The tokens as the backends speak them. The tokens an entry matches (one word, or a phrase's run, found as
    at planning by :func:`find_matches`) become one token whose ``original`` is the run as written, so subtitles,
    words.json and words.csv show it and time it as one unit; an alias entry's normalised words are its
    ``spoken``; a phoneme entry sets its ``phonemes`` (IPA, spoken as one word by the backends that take phonemes)
    and leaves ``spoken`` as written, for display and for the backends that take words only. Tokens are
    re-indexed."""
    if not pronunciations:
        return tokens
    by_key = {match_key(p.grapheme): p for p in pronunciations}
    max_words = max(len(key.split()) for key in by_key)
    out: list[ScriptToken] = []
    position = 0
    for start, end, key in find_matches(tokens, by_key, max_words, paragraph_starts):
        out.extend(tokens[position:start])
        out.append(_pronounced(tokens[start:end], by_key[key], locale))
        position = end
    out.extend(tokens[position:])
    return [token if token.index == n else token.model_copy(update={"index": n}) for n, token in enumerate(out)]


def item_tokens(item: ItemSpec) -> list[ScriptToken]:
    """The item's script tokens as every step speaks and times them: its text normalised, its lexicon entries
    applied (the one place they are built)."""
    return apply_pronunciations(normalize_script(item.text, item.locale), item.pronunciations, item.locale,
                                item.paragraphs)


def _pronounced(run: list[ScriptToken], entry: Pronunciation, locale: str) -> ScriptToken:
    """The one token a matched run becomes."""
    written = [w for token in run for w in token.spoken]
    if entry.alias is not None:
        spoken, phonemes = [w for t in normalize_script(entry.alias, locale) for w in t.spoken] or written, None
    else:  # the backends that take phonemes speak the IPA in place of all of them; the others read them as written
        spoken, phonemes = written, entry.phonemes
    return ScriptToken(index=run[0].index, original=" ".join(token.original for token in run), spoken=spoken,
                       unspoken=[w for token in run for w in token.unspoken], phonemes=phonemes)
