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
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from narration.normalize import normalize_script
from narration.schema import ItemSpec, LineError
from narration.settings import Settings

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
MARKUP = re.compile(r"</?[A-Za-z][A-Za-z0-9:_-]*(\s[^<>]*)?/?>")
SUPPORTED_SUFFIXES = (".txt", ".jsonl", ".csv")
SUPPORTED_LANGUAGES = {"en", "en-us", "en-gb"}
RAW_PREVIEW = 200


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (wrong type, too large, no valid line)."""


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

    @field_validator("text", "id", "voice", "language", mode="before")
    @classmethod
    def _strings_only(cls, value):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        return value


CSV_FIELDS = {"id", "text", "voice", "language", "speed", "seed"}


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


def _preview(raw: str) -> str:
    return raw if len(raw) <= RAW_PREVIEW else raw[:RAW_PREVIEW] + "..."


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


def _check_line(
    manifest: str, line_no: int, raw: str, fields: ManifestLine, ctx: ValidationContext, default_id: str
) -> ItemSpec | LineError:
    def reject(field_name: str | None, reason: str) -> LineError:
        return LineError(manifest=manifest, line=line_no, field=field_name, reason=reason, raw=_preview(raw))

    settings = ctx.settings
    text = fields.text
    if not text:
        return reject("text", "text is empty")
    if len(text) > settings.max_text_chars:
        return reject("text", f"text is {len(text)} characters, over the limit of {settings.max_text_chars}")
    if any(ord(ch) < 32 for ch in text):
        return reject("text", "text contains control characters")
    if MARKUP.search(text):
        return reject("text", "markup (SSML/HTML tags) is not supported; give plain text")
    if not normalize_script(text):
        return reject("text", "text has nothing speakable (only punctuation, symbols or emoji)")

    item_id = fields.id if fields.id is not None else default_id
    if not ID_PATTERN.match(item_id) or ".." in item_id:
        return reject(
            "id",
            "id must be 1-96 characters of letters, digits, '.', '_' or '-', start with a letter or digit, "
            "and contain no '..'",
        )
    if item_id in ctx.seen_ids:
        return reject("id", f"duplicate id {item_id!r} (first used at {ctx.seen_ids[item_id]})")

    voice = fields.voice or ctx.default_voice or settings.default_voice
    if voice not in ctx.voices:
        known = ", ".join(sorted(ctx.voices)) or "none"
        return reject("voice", f"unknown voice {voice!r}; voices in the library: {known}")

    language = (fields.language or ctx.default_language or settings.default_language).lower()
    if language not in SUPPORTED_LANGUAGES:
        return reject("language", f"unsupported language {language!r}; supported: {sorted(SUPPORTED_LANGUAGES)}")

    if ctx.accepted >= settings.max_items_per_batch:
        return reject(None, f"batch limit of {settings.max_items_per_batch} items reached; line not processed")

    ctx.seen_ids[item_id] = f"{manifest}:{line_no}"
    ctx.accepted += 1
    return ItemSpec(
        item_id=item_id,
        text=text,
        voice=voice,
        language=language.split("-")[0],
        speed=fields.speed,
        seed=fields.seed,
        manifest=manifest,
        line=line_no,
        metadata=fields.metadata,
    )


def _default_id(manifest: str, line_no: int) -> str:
    stem = posixpath.splitext(posixpath.basename(manifest))[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_") or "line"
    return f"{stem[:80]}-{line_no:05d}"


def _iter_byte_lines(data: bytes) -> Iterable[tuple[int, bytes]]:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        yield number, raw


def _parse_txt(name: str, data: bytes, ctx: ValidationContext, out: ParsedManifest) -> None:
    for line_no, raw_bytes in _iter_byte_lines(data):
        try:
            raw = _decode_line(raw_bytes)
        except UnicodeDecodeError as exc:
            out.errors.append(LineError(manifest=name, line=line_no, field="text",
                                        reason=f"not valid UTF-8 (byte {exc.start})", raw=repr(raw_bytes[:80])))
            continue
        if not raw.strip():
            continue
        out.lines_seen += 1
        out_item = _check_line(name, line_no, raw, ManifestLine(text=raw.strip()), ctx, _default_id(name, line_no))
        (out.items if isinstance(out_item, ItemSpec) else out.errors).append(out_item)


def _parse_jsonl(name: str, data: bytes, ctx: ValidationContext, out: ParsedManifest) -> None:
    for line_no, raw_bytes in _iter_byte_lines(data):
        try:
            raw = _decode_line(raw_bytes)
        except UnicodeDecodeError as exc:
            out.errors.append(LineError(manifest=name, line=line_no, field=None,
                                        reason=f"not valid UTF-8 (byte {exc.start})", raw=repr(raw_bytes[:80])))
            continue
        if not raw.strip():
            continue
        out.lines_seen += 1
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            out.errors.append(LineError(manifest=name, line=line_no, field=None,
                                        reason=f"invalid JSON: {exc.msg} at column {exc.colno}", raw=_preview(raw)))
            continue
        if not isinstance(obj, dict):
            out.errors.append(LineError(manifest=name, line=line_no, field=None,
                                        reason=f"expected a JSON object, got {type(obj).__name__}", raw=_preview(raw)))
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


def _parse_csv(name: str, data: bytes, ctx: ValidationContext, out: ParsedManifest) -> None:
    # Decode leniently so one bad byte costs only its own row; such rows are rejected below.
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{name}: empty CSV file (a header row with a 'text' column is required)") from None
    columns = [c.strip().lower() for c in header]
    unknown = [c for c in columns if c not in CSV_FIELDS]
    if "text" not in columns or unknown:
        reason = f"unknown column(s) {unknown}" if unknown else "missing the 'text' column"
        out.errors.append(LineError(manifest=name, line=1, field="header",
                                    reason=f"{reason}; allowed columns: {sorted(CSV_FIELDS)}", raw=_preview(",".join(header))))
        return
    start_line = 1
    for row in reader:
        line_no = start_line + 1
        start_line = reader.line_num
        raw = ",".join(row)
        if not any(cell.strip() for cell in row):
            continue
        out.lines_seen += 1
        if any("\udc80" <= ch <= "\udcff" for ch in raw):
            out.errors.append(LineError(manifest=name, line=line_no, field=None, reason="not valid UTF-8",
                                        raw=_preview(raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))))
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
    out = ParsedManifest(name=name)
    PARSERS[suffix](name, data, ctx, out)
    return out
