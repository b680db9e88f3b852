"""Manifest parsing and validation: .txt (one utterance a line), .jsonl (one object a line) and .csv.

Every line is either accepted as an :class:`ItemSpec` or rejected with a :class:`LineError` naming the file, the
line number, the field and the reason; a bad line never costs the batch its good lines.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from narration.errors import ItemFault
from narration.languages import SUPPORTED_LANGUAGES, base_language
from narration.layout import ID_PATTERN, ID_RULE
from narration.longform import MAX_CHAPTER_TITLE_CHARS, LongformTextError, heading_chapters, paragraphs_of
from narration.normalize import normalize_script, unspeakable_scripts, unspoken_words
from narration.schema import Chapter, ItemSpec, LineError
from narration.settings import Settings

if TYPE_CHECKING:
    from narration.lexicons import LexiconLibrary

MARKUP = re.compile(
    r"</?[A-Za-z][A-Za-z0-9:_-]*(\s[^<>]*)?/?>"  # <speak>, <break time="1s"/>, </p>
    r"|<!--|<\?xml|<!\[CDATA\[|<!DOCTYPE"  # comments, XML declarations, CDATA
    r"|&(?:amp|lt|gt|quot|apos|nbsp|#\d+|#x[0-9A-Fa-f]+);"  # character entities of escaped markup
)
# Trojan-source style bidirectional overrides: invisible, and they reorder what a reviewer reads.
BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".csv")
LONGFORM_TXT_SUFFIX = ".longform.txt"  # a .txt manifest that is one long item (blank lines: paragraphs)
RAW_PREVIEW = 200
MAX_METADATA_BYTES = 4096  # metadata travels in the plan and every chunk spec
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Tabs and line breaks pasted into a text (a quoted CSV cell, a JSON "\n") are spacing, not content.
TEXT_WHITESPACE = re.compile(r"[ \t\n\r\f\v]*[\t\n\r\f\v][ \t\n\r\f\v]*")
CONTROL_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\f": "a form feed",
                 "\v": "a vertical tab", "\x00": "a NUL byte"}


class ManifestError(ItemFault, ValueError):
    """The manifest as a whole cannot be used (wrong type, too large, no valid line)."""


class ChapterField(BaseModel):
    """One entry of a line's ``chapters``: a title and the 1-based paragraph of the text it starts at."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=MAX_CHAPTER_TITLE_CHARS)
    paragraph: int = Field(ge=1)

    @field_validator("title", mode="before")
    @classmethod
    def _title_string(cls, value):
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        return value

    @field_validator("paragraph", mode="before")
    @classmethod
    def _paragraph_number(cls, value):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"must be a paragraph number, got {type(value).__name__}")
        return value


class ManifestLine(BaseModel):
    """The fields a manifest line may carry; anything else is an unknown field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = None
    text: str
    voice: str | None = None
    language: str | None = None
    speed: float = Field(1.0, ge=0.5, le=2.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict = Field(default_factory=dict)
    lexicons: list[str] = Field(default_factory=list, description="Lexicon names searched before the batch's "
                                "(the first lexicon with a grapheme wins); in CSV one cell, comma separated.")
    chapters: list[ChapterField] | None = None

    @field_validator("lexicons", mode="before")
    @classmethod
    def _lexicon_names(cls, value):
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("chapters", mode="before")
    @classmethod
    def _chapters_json(cls, value):
        # A CSV cell carries the list as JSON text.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON list of {{\"title\", \"paragraph\"}} objects ({exc.msg})") from None
        return value

    @field_validator("text", "id", "voice", "language", mode="before")
    @classmethod
    def _strings_only(cls, value):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        return value

    @field_validator("speed", "seed", mode="before")
    @classmethod
    def _numbers_not_booleans(cls, value):
        # JSON true/false would otherwise pass as 1/0; CSV cells arrive as strings and are parsed by the field.
        if isinstance(value, bool):
            raise ValueError("must be a number, got a boolean")
        return value


CSV_FIELDS = {"id", "text", "voice", "language", "speed", "seed", "lexicons", "chapters"}


@dataclass
class ParsedManifest:
    name: str
    items: list[ItemSpec] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    lines_seen: int = 0


@dataclass
class ValidationContext:
    """What a line is checked against: known voices, limits, and ids already taken in this batch."""

    settings: Settings
    voices: set[str]
    default_voice: str | None = None
    default_language: str | None = None
    seen_ids: dict[str, str] = field(default_factory=dict)
    accepted: int = 0
    lexicons: LexiconLibrary | None = None  # the library the lines' lexicon names are looked up in
    batch_lexicons: list[str] = field(default_factory=list)  # for every line, searched after the line's own


def _preview(raw: str) -> str:
    # Lone surrogates (undecodable bytes kept by surrogateescape) become U+FFFD, so the quarantine stays writable.
    raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return raw if len(raw) <= RAW_PREVIEW else raw[:RAW_PREVIEW] + "..."


def _unsafe_character(value: str) -> str | None:
    """Why ``value`` cannot be narrated or stored as-is: a control, bidi override or lone surrogate; else None."""
    for position, ch in enumerate(value):
        category = unicodedata.category(ch)
        if category == "Cs":
            return f"invalid Unicode (lone surrogate U+{ord(ch):04X} at position {position})"
        if category == "Cc" or ch in BIDI_CONTROLS:
            named = f"{CONTROL_NAMES[ch]}, " if ch in CONTROL_NAMES else ""
            return f"control characters ({named}U+{ord(ch):04X} at position {position})"
    return None


def _metadata_problem(metadata: dict) -> str | None:
    try:
        size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
    except UnicodeEncodeError:
        return "metadata contains invalid Unicode (a lone surrogate)"
    if size > MAX_METADATA_BYTES:
        return f"metadata is {size} bytes, over the limit of {MAX_METADATA_BYTES}"
    return None


class _DuplicateKey(ItemFault, ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _decode_line(raw: bytes) -> str:
    text = raw.decode("utf-8")  # raises UnicodeDecodeError, reported per line
    return text.removeprefix("\ufeff").rstrip("\r")


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    location = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "extra_forbidden":
        return location, "unknown field"
    if err["type"] == "missing":
        return location, "required field is missing"
    return location, err["msg"].removeprefix("Value error, ")


def _chapters(fields: ManifestLine, paragraphs, reject) -> list[Chapter] | LineError:
    """The line's chapters: from its ``chapters`` field or its heading lines (not both), checked against its
    paragraphs."""
    from_headings = heading_chapters(paragraphs)
    if fields.chapters is None:
        return from_headings
    if from_headings:
        return reject("chapters", "give chapters either as heading lines ('# Title') in the text or as the "
                                  "chapters field, not both")
    previous = 0
    for n, chapter in enumerate(fields.chapters):
        unsafe = _unsafe_character(chapter.title)
        if unsafe:
            return reject(f"chapters.{n}.title", f"title contains {unsafe}")
        if chapter.paragraph > len(paragraphs):
            return reject(f"chapters.{n}.paragraph", f"paragraph {chapter.paragraph} does not exist: the text has "
                                                     f"{len(paragraphs)} paragraph(s) (blank lines separate them)")
        if chapter.paragraph <= previous:
            return reject(f"chapters.{n}.paragraph", f"paragraph {chapter.paragraph} does not come after the "
                                                     f"previous chapter's ({previous}): list chapters in order")
        previous = chapter.paragraph
    return [Chapter(title=c.title, paragraph=c.paragraph) for c in fields.chapters]


def _check_line(
    manifest: str, line_no: int, raw: str, fields: ManifestLine, ctx: ValidationContext, default_id: str,
    text_lines_are_manifest_lines: bool = False,
) -> ItemSpec | LineError:
    def reject(field_name: str | None, reason: str, at: int | None = None) -> LineError:
        return LineError(manifest=manifest, line=line_no if at is None else at, field=field_name, reason=reason,
                         raw=_preview(raw))

    settings = ctx.settings
    try:
        paragraphs = paragraphs_of(fields.text)
    except LongformTextError as exc:
        if text_lines_are_manifest_lines:
            return reject("text", exc.reason, at=line_no + exc.line - 1)
        return reject("text", f"{exc.reason} (line {exc.line} of the text)")
    texts = [TEXT_WHITESPACE.sub(" ", p.text.strip()) for p in paragraphs]
    text = " ".join(texts)
    if not text:
        return reject("text", "text is empty")
    if len(text) > settings.max_text_chars:
        return reject("text", f"text is {len(text)} characters, over the limit of {settings.max_text_chars}")
    unsafe = _unsafe_character(text)
    if unsafe:
        return reject("text", f"text contains {unsafe}")
    if MARKUP.search(text):
        return reject("text", "markup (SSML/HTML tags) is not supported; give plain text")
    language = (fields.language or ctx.default_language or settings.default_language).lower().replace("_", "-")
    try:
        speakable = normalize_script(text, language)
    except Exception as exc:  # a normaliser bug costs this line only, never the manifest
        return reject("text", f"text cannot be normalised for speech ({type(exc).__name__}: {exc})")
    if not speakable:
        scripts = unspeakable_scripts(text)
        if scripts:
            return reject("text", f"text is written in a script the voices cannot speak ({', '.join(scripts)}); "
                                  "only Latin-script text (English) is narrated")
        return reject("text", "text has nothing speakable (only punctuation, symbols or emoji)")

    item_id = fields.id if fields.id is not None else default_id
    unsafe_id = _unsafe_character(item_id)
    if unsafe_id:
        return reject("id", f"id contains {unsafe_id}; {ID_RULE}")
    if not ID_PATTERN.match(item_id) or ".." in item_id:
        return reject("id", ID_RULE)
    if item_id in ctx.seen_ids:
        return reject("id", f"duplicate id {item_id!r} (first used at {ctx.seen_ids[item_id]})")

    voice = fields.voice or ctx.default_voice or settings.default_voice
    if voice not in ctx.voices:
        known = ", ".join(sorted(ctx.voices)) or "none"
        return reject("voice", f"unknown voice {voice!r}; voices in the library: {known}")

    if language not in SUPPORTED_LANGUAGES:
        return reject("language", f"unsupported language {language!r}; supported: {sorted(SUPPORTED_LANGUAGES)}")

    problem = _metadata_problem(fields.metadata)
    if problem:
        return reject("metadata", problem)

    starts, word = [], 0
    for paragraph_text in texts:
        starts.append(word)
        word += len(paragraph_text.split())

    pronunciations, lexicons_not_applied = [], []
    if fields.lexicons or ctx.batch_lexicons:
        known = ctx.lexicons.keys if ctx.lexicons is not None else {}
        unknown = [name for name in fields.lexicons if name not in known]
        if unknown:
            return reject("lexicons", f"unknown lexicon(s) {unknown}; lexicons in the library: "
                                      f"{', '.join(known) or 'none'}")
        # a malformed lexicon raises LexiconError here: it fails the batch, not this line
        foreign = [lexicon for lexicon in map(ctx.lexicons.load, fields.lexicons)
                   if not lexicon.applies_to(language)]
        if foreign:
            return reject("lexicons", "; ".join(f"lexicon {lexicon.name!r} is for {lexicon.language!r}, the line "
                                                f"is {language!r}" for lexicon in foreign))
        # The batch's lexicons apply to the lines of their language; the item records the others it was spared.
        batch = [ctx.lexicons.load(name) for name in ctx.batch_lexicons]
        batch_lexicons = [lexicon.name for lexicon in batch if lexicon.applies_to(language)]
        lexicons_not_applied = [f"{lexicon.name} ({lexicon.language})" for lexicon in batch
                                if not lexicon.applies_to(language)]
        pronunciations = ctx.lexicons.resolve(batch_lexicons, fields.lexicons, speakable, starts[1:])
    chapters = _chapters(fields, paragraphs, reject)
    if isinstance(chapters, LineError):
        return chapters

    if ctx.accepted >= settings.max_items_per_batch:
        return reject(None, f"batch limit of {settings.max_items_per_batch} items reached; line not processed")

    ctx.seen_ids[item_id] = f"{manifest}:{line_no}"
    ctx.accepted += 1
    return ItemSpec(
        item_id=item_id,
        text=text,
        voice=voice,
        language=base_language(language),
        locale=language,
        unspoken_words=unspoken_words(speakable),
        speed=fields.speed,
        seed=fields.seed,
        manifest=manifest,
        line=line_no,
        metadata=fields.metadata,
        pronunciations=pronunciations,
        paragraphs=starts[1:],
        chapters=chapters,
        lexicons_not_applied=lexicons_not_applied,
    )


def _default_id(manifest: str, line_no: int) -> str:
    """``teamA/news.txt`` line 1 -> ``teamA-news-00001``: the folder path is part of the id, so same-named
    manifests in different folders never collide; a long path keeps its end (the file's own name)."""
    stem = posixpath.splitext(manifest)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")
    return f"{stem[-80:].strip('-_') or 'line'}-{line_no:05d}"


def _iter_byte_lines(data: bytes) -> Iterable[tuple[int, bytes]]:
    yield from enumerate(data.split(b"\n"), start=1)


def _undecodable(name: str, line_no: int, raw_bytes: bytes, exc: UnicodeDecodeError, field_name: str | None
                 ) -> LineError:
    return LineError(manifest=name, line=line_no, field=field_name,
                     reason=f"not valid UTF-8 (byte {exc.start}); save the manifest as UTF-8",
                     raw=repr(raw_bytes[:80]))


def _parse_txt(name: str, data: bytes, ctx: ValidationContext, out: ParsedManifest) -> None:
    for line_no, raw_bytes in _iter_byte_lines(data):
        try:
            raw = _decode_line(raw_bytes)
        except UnicodeDecodeError as exc:
            out.lines_seen += 1
            out.errors.append(_undecodable(name, line_no, raw_bytes, exc, "text"))
            continue
        if not raw.strip():
            continue
        out.lines_seen += 1
        out_item = _check_line(name, line_no, raw, ManifestLine(text=raw.strip()), ctx, _default_id(name, line_no))
        (out.items if isinstance(out_item, ItemSpec) else out.errors).append(out_item)


def _parse_longform_txt(name: str, data: bytes, ctx: ValidationContext, out: ParsedManifest) -> None:
    """A ``*.longform.txt`` manifest: the whole file is one item; blank lines separate paragraphs and a line
    starting with ``# `` is a chapter heading."""
    out.lines_seen += 1
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line_no = data[:exc.start].count(b"\n") + 1
        out.errors.append(_undecodable(name, line_no, data.split(b"\n")[line_no - 1], exc, "text"))
        return
    text = text.replace("\r\n", "\n")
    first_line = len(text) - len(text.lstrip())  # the item starts at its first non-blank line
    line_no = text[:first_line].count("\n") + 1
    stem = name[: -len(LONGFORM_TXT_SUFFIX)]
    out_item = _check_line(name, line_no, text.strip()[:RAW_PREVIEW * 2], ManifestLine(text=text), ctx,
                           _default_id(stem + ".txt", line_no), text_lines_are_manifest_lines=True)
    (out.items if isinstance(out_item, ItemSpec) else out.errors).append(out_item)


def _load_json_line(raw: str) -> tuple[object, str | None]:
    """The line's JSON value, or the reason it is not acceptable JSON."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (column {exc.colno})"
    except _DuplicateKey as exc:
        return None, f"invalid JSON: the field {str(exc)!r} appears more than once"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"


def _parse_jsonl(name: str, data: bytes, ctx: ValidationContext, out: ParsedManifest) -> None:
    for line_no, raw_bytes in _iter_byte_lines(data):
        try:
            raw = _decode_line(raw_bytes)
        except UnicodeDecodeError as exc:
            out.lines_seen += 1
            out.errors.append(_undecodable(name, line_no, raw_bytes, exc, None))
            continue
        if not raw.strip():
            continue
        out.lines_seen += 1
        obj, problem = _load_json_line(raw)
        if problem is None and not isinstance(obj, dict):
            problem = f"expected a JSON object, got {type(obj).__name__}"
        if problem:
            out.errors.append(LineError(manifest=name, line=line_no, field=None, reason=problem, raw=_preview(raw)))
            continue
        try:
            fields = ManifestLine.model_validate(obj)
        except ValidationError as exc:
            field_name, reason = _first_error(exc)
            out.errors.append(LineError(manifest=name, line=line_no, field=field_name, reason=reason,
                                        raw=_preview(raw)))
            continue
        out_item = _check_line(name, line_no, raw, fields, ctx, _default_id(name, line_no))
        (out.items if isinstance(out_item, ItemSpec) else out.errors).append(out_item)


def _csv_rows(reader) -> Iterable[tuple[int, list[str] | None, str | None]]:
    """(first line number, cells, None) per record, or (line, None, reason) for a record the csv module refuses."""
    start_line = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a field over the csv module's size limit: costs only that record
            yield start_line + 1, None, f"unreadable CSV record: {exc}"
            start_line = reader.line_num
            continue
        yield start_line + 1, row, None
        start_line = reader.line_num


def _parse_csv(name: str, data: bytes, ctx: ValidationContext, out: ParsedManifest) -> None:
    # Decode leniently so one bad byte costs only its own row; such rows are rejected below.
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{name}: empty CSV file (a header row with a 'text' column is required)") from None
    except csv.Error as exc:
        raise ManifestError(f"{name}: the CSV header row cannot be read: {exc}") from None
    columns = [c.strip().lower() for c in header]
    unknown = [c for c in columns if c not in CSV_FIELDS]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if "text" not in columns or unknown or repeated:
        if unknown:
            reason = f"unknown column(s) {[_preview(c) for c in unknown]}"
        elif repeated:
            reason = f"repeated column(s) {repeated}"
        else:
            reason = "missing the 'text' column"
        out.lines_seen += 1
        out.errors.append(LineError(manifest=name, line=1, field="header",
                                    reason=f"{reason}; allowed columns: {sorted(CSV_FIELDS)}",
                                    raw=_preview(",".join(header))))
        return
    records = 0
    for line_no, row, problem in _csv_rows(reader):
        if row is not None and not any(cell.strip() for cell in row):
            continue
        records += 1
        out.lines_seen += 1
        if problem:
            out.errors.append(LineError(manifest=name, line=line_no, field=None, reason=problem, raw=""))
            continue
        raw = ",".join(row)
        if any("\udc80" <= ch <= "\udcff" for ch in raw):
            out.errors.append(LineError(manifest=name, line=line_no, field=None,
                                        reason="not valid UTF-8; save the manifest as UTF-8", raw=_preview(raw)))
            continue
        if len(row) != len(columns):
            out.errors.append(LineError(manifest=name, line=line_no, field=None,
                                        reason=f"expected {len(columns)} columns, got {len(row)}", raw=_preview(raw)))
            continue
        values = {col: cell.strip() for col, cell in zip(columns, row) if cell.strip() != "" or col == "text"}
        try:
            fields = ManifestLine.model_validate(values)
        except ValidationError as exc:
            field_name, reason = _first_error(exc)
            out.errors.append(LineError(manifest=name, line=line_no, field=field_name, reason=reason,
                                        raw=_preview(raw)))
            continue
        out_item = _check_line(name, line_no, raw, fields, ctx, _default_id(name, line_no))
        (out.items if isinstance(out_item, ItemSpec) else out.errors).append(out_item)
    if not records:
        raise ManifestError(f"{name}: the CSV has a header row but no data rows")


PARSERS = {".txt": _parse_txt, ".jsonl": _parse_jsonl, ".csv": _parse_csv}


def parse_manifest(name: str, data: bytes, ctx: ValidationContext) -> ParsedManifest:
    """Validate every line of one manifest; raises :class:`ManifestError` only for file-level problems."""
    suffix = posixpath.splitext(name)[1].lower()
    if suffix not in PARSERS:
        raise ManifestError(f"{name}: unsupported manifest type {suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if len(data) > ctx.settings.max_manifest_bytes:
        raise ManifestError(
            f"{name}: {len(data)} bytes, over the manifest size limit of {ctx.settings.max_manifest_bytes} bytes"
        )
    if not data.removeprefix(b"\xef\xbb\xbf").strip():
        raise ManifestError(f"{name}: the manifest is empty")
    if data.startswith(UTF16_BOMS):
        raise ManifestError(f"{name}: the manifest is UTF-16 text; save it as UTF-8")
    out = ParsedManifest(name=name)
    parser = _parse_longform_txt if name.lower().endswith(LONGFORM_TXT_SUFFIX) else PARSERS[suffix]
    parser(name, data, ctx, out)
    return out
