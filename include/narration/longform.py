"""Long-form items: paragraphs and chapter headings in a text, synthesis segments and the pauses between them.

An item is long when its text is longer than ``NARRATION_LONGFORM_MIN_CHARS``, has several paragraphs or has
chapters. Its script tokens (``pipeline._tokens``, never re-normalised here) are cut into synthesis segments on
paragraph and sentence boundaries (``normalize.sentences``), as large as the synthesizer takes at once
(``Synthesizer.segment_seconds``; None: one sentence a segment). Segments are joined with silences that follow the
text: a sentence pause inside a paragraph, a longer one at a paragraph break, the longest before a chapter.

Airflow-free and cheap: no numpy, no backend.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from narration.errors import ItemFault
from narration.normalize import is_clause_end, sentences, spoken_text
from narration.schema import Chapter, ChapterMark, ItemSpec, ScriptToken, SegmentSpan
from narration.settings import Settings

HEADING_PREFIX = "# "  # a line of a multi-line text starting with this is a chapter heading
MAX_CHAPTER_TITLE_CHARS = 200
_BLANK = re.compile(r"[ \t\r\f\v]*")


class LongformTextError(ItemFault, ValueError):
    """A text's paragraphs or headings cannot be used; ``line`` is the 1-based line of the text at fault."""

    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Paragraph:
    text: str  # its lines, as written (the caller collapses whitespace)
    line: int  # 1-based line of the text it starts on
    heading: str | None = None  # the chapter title, when the paragraph is a heading line


def paragraphs_of(text: str) -> list[Paragraph]:
    """The paragraphs of ``text``: separated by blank lines; in a text of several lines, a line starting with
    ``# `` is a chapter heading, a paragraph of its own whose words (the title) are spoken. A one-line text is one
    paragraph, whatever it starts with."""
    if "\n" not in text:
        return [Paragraph(text, 1)] if text.strip() else []
    paragraphs: list[Paragraph] = []
    lines: list[str] = []
    start = 1

    def close() -> None:
        if lines:
            paragraphs.append(Paragraph("\n".join(lines), start))
            lines.clear()

    for number, line in enumerate(text.split("\n"), start=1):
        if _BLANK.fullmatch(line):
            close()
            continue
        if line.lstrip().startswith(HEADING_PREFIX):
            close()
            title = line.lstrip()[len(HEADING_PREFIX):].strip()
            if not title:
                raise LongformTextError(number, "a chapter heading ('# ') has no title")
            if len(title) > MAX_CHAPTER_TITLE_CHARS:
                raise LongformTextError(number, f"a chapter title is {len(title)} characters, over the limit of "
                                                f"{MAX_CHAPTER_TITLE_CHARS}")
            paragraphs.append(Paragraph(title, number, heading=title))
            continue
        if not lines:
            start = number
        lines.append(line)
    close()
    return paragraphs


def heading_chapters(paragraphs: list[Paragraph]) -> list[Chapter]:
    """The chapters the heading lines make: each starts at its heading's paragraph."""
    return [Chapter(title=p.heading, paragraph=n) for n, p in enumerate(paragraphs, start=1) if p.heading]


def is_long(item: ItemSpec, settings: Settings) -> bool:
    """Whether the item is narrated in segments (long), or in one piece as every short item is."""
    return len(item.text) > settings.longform_min_chars or bool(item.paragraphs) or bool(item.chapters)


def token_paragraphs(tokens: list[ScriptToken], paragraph_starts: list[int]) -> list[int]:
    """The 1-based paragraph of each token. ``paragraph_starts`` are the word indexes (among the text's
    whitespace-separated words) where paragraphs 2.. start; a token starts a paragraph when its first word is at
    or past that index (a token merged into its neighbour, or a lexicon phrase's token, keeps all its words)."""
    result = []
    word = 0
    paragraph = 1
    for token in tokens:
        while paragraph - 1 < len(paragraph_starts) and word >= paragraph_starts[paragraph - 1]:
            paragraph += 1
        result.append(paragraph)
        word += len(token.original.split())
    return result


@dataclass(frozen=True)
class Segment:
    """One synthesis segment: a run of whole sentences of one paragraph, and the pause after it."""

    index: int
    tokens: list[ScriptToken]
    paragraph: int
    chapter: int | None
    pause_after_ms: int

    @property
    def first_token(self) -> int:
        return self.tokens[0].index

    @property
    def end_token(self) -> int:
        return self.tokens[-1].index + 1


def max_segment_chars(synth_cls: type, speed: float = 1.0) -> int | None:
    """The most spoken characters one segment may hold for this synthesizer at ``speed``; None: one sentence a
    segment."""
    seconds = getattr(synth_cls, "segment_seconds", None)
    if seconds is None:
        return None
    return max(1, int(seconds * synth_cls.speaking_chars_per_second * speed))


def chapter_of(paragraph: int, chapters: list[Chapter]) -> int | None:
    """The 0-based chapter a paragraph belongs to (the last that starts at or before it), None before the first."""
    found = None
    for n, chapter in enumerate(chapters):
        if chapter.paragraph <= paragraph:
            found = n
    return found


def _split_long_sentence(sentence: list[ScriptToken], cap: int) -> list[list[ScriptToken]]:
    """A sentence of more than ``cap`` spoken characters cut at clause ends (commas, semicolons, dashes) and,
    where a clause is still longer, between words: what one synthesis call may hold stays bounded."""
    if len(spoken_text(sentence)) <= cap:
        return [sentence]
    clauses: list[list[ScriptToken]] = [[]]
    for token in sentence:
        clauses[-1].append(token)
        if is_clause_end(token.original):
            clauses.append([])
    pieces: list[list[ScriptToken]] = []
    for clause in (c for c in clauses if c):
        parts = [[token] for token in clause] if len(spoken_text(clause)) > cap else [clause]
        for part in parts:
            if pieces and len(spoken_text(pieces[-1])) + 1 + len(spoken_text(part)) <= cap:
                pieces[-1] = pieces[-1] + part
            else:
                pieces.append(list(part))
    return pieces


def segment_tokens(tokens: list[ScriptToken], item: ItemSpec, synth_cls: type, settings: Settings) -> list[Segment]:
    """Cut the item's tokens into synthesis segments: never across a paragraph, never inside a sentence, each
    at most :func:`max_segment_chars` long (a longer sentence stays whole, unless it is longer than
    ``NARRATION_LONGFORM_MIN_CHARS``: then it is cut at clause ends, else between words); the pauses follow the
    text."""
    limit = max_segment_chars(synth_cls, item.speed)
    cap = max(limit or 0, settings.longform_min_chars)
    paragraphs = token_paragraphs(tokens, item.paragraphs)
    groups: list[tuple[int, list[ScriptToken]]] = []
    start = 0
    while start < len(tokens):
        end = start
        while end < len(tokens) and paragraphs[end] == paragraphs[start]:
            end += 1
        pieces: list[list[ScriptToken]] = []
        for sentence in (part for whole in sentences(tokens[start:end])
                         for part in _split_long_sentence(whole, cap)):
            if pieces and limit is not None and \
                    len(spoken_text(pieces[-1])) + 1 + len(spoken_text(sentence)) <= limit:
                pieces[-1] = pieces[-1] + sentence
            else:
                pieces.append(list(sentence))
        groups.extend((paragraphs[start], piece) for piece in pieces)
        start = end
    segments = []
    for n, (paragraph, piece) in enumerate(groups):
        chapter = chapter_of(paragraph, item.chapters)
        pause = 0
        if n + 1 < len(groups):
            next_paragraph = groups[n + 1][0]
            next_chapter = chapter_of(next_paragraph, item.chapters)
            if next_chapter is not None and next_chapter != chapter:
                pause = settings.pause_chapter_ms
            elif next_paragraph != paragraph:
                pause = settings.pause_paragraph_ms
            else:
                pause = settings.pause_sentence_ms
        segments.append(Segment(n, piece, paragraph, chapter, pause))
    return segments


def segment_seed(item: ItemSpec, index: int) -> int:
    """The seed of segment ``index``: derived from the item's seed (or, without one, from its id, so a resumed run
    samples what the killed one did) and the index; one policy for every segment of the item."""
    base = item.seed if item.seed is not None else f"id:{item.item_id}"
    digest = hashlib.sha256(f"{base}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1  # 0 .. 2**31 - 1, what every backend's seed accepts


def pause_settings(settings: Settings) -> dict[str, int]:
    return {"sentence": settings.pause_sentence_ms, "paragraph": settings.pause_paragraph_ms,
            "chapter": settings.pause_chapter_ms}


def chapter_marks(item: ItemSpec, segments: list[SegmentSpan], duration_ms: int) -> list[ChapterMark]:
    """The item's chapters as delivered, covering the whole programme: each starts where its first segment starts
    (the first at 0) and ends where the next starts. Text before the first chapter, or an item without chapters,
    is a chapter titled with the item's ``title`` metadata, else its id."""
    title = str(item.metadata.get("title") or item.item_id)
    starts: list[tuple[str, int, int]] = []  # (title, start_ms, first word)
    seen: set[int | None] = set()
    for span in segments:
        if span.chapter in seen:
            continue
        seen.add(span.chapter)
        name = item.chapters[span.chapter].title if span.chapter is not None else title
        starts.append((name, 0 if not starts else span.start_ms, span.first_token))
    if not starts:
        starts.append((title, 0, 0))
    marks = []
    for n, (name, start, first_word) in enumerate(starts):
        end = starts[n + 1][1] if n + 1 < len(starts) else duration_ms
        marks.append(ChapterMark(title=name, start_ms=start, end_ms=max(end, start + 1), first_word=first_word))
    return marks


def paragraph_ends(spans: list[SegmentSpan]) -> set[int]:
    """The index of each paragraph's last token but the programme's last (a chapter heading is a paragraph of its
    own): the subtitle cues end there, so a cue never runs from one paragraph into the next."""
    return {span.end_token - 1 for span, following in zip(spans, spans[1:]) if following.paragraph != span.paragraph}
