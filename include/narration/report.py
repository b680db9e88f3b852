"""Batch reports: one row per item (quarantined manifest lines included), as CSV, a summary dict and a
self-contained HTML page with audio players, word-boundary waveforms and subtitle previews.

Pure functions: the caller gathers the records and media (and writes the results wherever it likes).
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

import jinja2
import markupsafe
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model

from narration.encodings import DELIVERY_ENCODINGS
from narration.schema import Cue, ItemSpec, ItemStatus, LineError, SynthesisRecord, TimingRecord, WordTiming
from narration.subtitles.formats import SUBTITLE_FORMATS
from narration.subtitles.segment import effective_spans

# Every file an item ships: the WAV master ("audio"), its encodings and the output formats; one *_key column each.
OUTPUT_KINDS = ("audio", *DELIVERY_ENCODINGS, *SUBTITLE_FORMATS)


class _ItemFigures(BaseModel):
    """A report row's figures; :data:`ItemReportRow` adds one output key per output kind."""

    model_config = ConfigDict(extra="forbid")

    item_id: str | None = Field(None, description="None for a quarantined line that had no usable id.")
    manifest: str
    line: int
    voice: str | None = None
    language: str | None = None
    characters: int | None = None
    words: int | None = None
    unspoken_words: str | None = Field(None, description="Words shown in the subtitles but not heard (a script "
                                       "no backend speaks), space separated.")
    audio_seconds: float | None = None
    words_per_minute: float | None = None
    synthesizer: str | None = None
    segments: int | None = Field(None, description="A long item's synthesis segments, joined into one master "
                                 "(empty: narrated in one piece).")
    chapters: int | None = Field(None, description="A long item's chapters (chapters.vtt).")
    lexicon_entries: str | None = Field(None, description="The lexicon entries the item used and what its "
                                        "synthesizer did with each, '; ' separated (its synthesis record's).")
    synthesis_attempts: int | None = None
    asr_wer: float | None = None
    detected_language: str | None = Field(None, description="Spoken language found in the audio.")
    language_probability: float | None = None
    language_mismatch: bool | None = None
    voice_similarity: float | None = Field(None, description="Speaker-embedding cosine with the reference voice.")
    voice_cloning: bool | None = Field(None, description="False: the synthesizer speaks in its own voice (Piper, "
                                       "espeak-ng), not voice cloning; a low similarity is then expected.")
    timing_method: str | None = None
    fallback_reason: str | None = None
    mean_word_score: float | None = None
    min_word_score: float | None = None
    untimed_words: int | None = None
    low_confidence_words: int | None = None
    cues: int | None = None
    cue_rule_violations: dict[str, int] = Field(
        default_factory=dict, description="Rule name -> cues breaking it."
    )
    status: str
    error: str | None = None
    loudness_target_lufs: float | None = None
    loudness_lufs_before: float | None = None
    true_peak_dbtp_before: float | None = None
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    loudness_error: str | None = None


ItemReportRow = create_model(
    "ItemReportRow", __base__=_ItemFigures, __module__=__name__,
    __doc__="One line of the batch report: an item's figures and where its outputs went, or why it failed. "
            "``audio_key`` is the loudness-normalised WAV master; one ``<kind>_key`` per output kind follows it.",
    **{f"{kind}_key": (str | None, None) for kind in OUTPUT_KINDS},
)


def quarantine_row(error: LineError) -> ItemReportRow:
    """The report row of a rejected manifest line; error reads ``<file>:<line>: <field>: <reason>`` (the
    field part is left out when the whole line or file was at fault)."""
    where = f"{error.manifest}:{error.line}"
    message = f"{where}: {error.field}: {error.reason}" if error.field else f"{where}: {error.reason}"
    return ItemReportRow(
        manifest=error.manifest, line=error.line, status=ItemStatus.QUARANTINED.value, error=message
    )


def item_row(
    item: ItemSpec,
    synthesis: SynthesisRecord | None = None,
    timing: TimingRecord | None = None,
    cues: list[Cue] | None = None,
    outputs: Mapping[str, str] | None = None,
    *,
    status: ItemStatus | str | None = None,
    error: str | None = None,
    low_confidence_below: float | None = None,
) -> ItemReportRow:
    """The report row of an item from whatever records it reached.

    ``outputs`` maps output kinds (:data:`OUTPUT_KINDS`) to their keys. ``status``/``error``
    default to the latest record's. Words scoring below ``low_confidence_below`` count as low confidence
    (scores are backend-specific, so the threshold is the caller's; None leaves the count empty).
    """
    outputs = dict(outputs or {})
    unknown = set(outputs) - set(OUTPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown output kinds {sorted(unknown)}; valid: {', '.join(OUTPUT_KINDS)}")
    latest = timing or synthesis
    resolved_status = status if status is not None else (latest.status if latest else ItemStatus.FAILED)
    if timing and timing.words:
        word_count = len(timing.words)
    elif synthesis and synthesis.tokens:
        word_count = len(synthesis.tokens)
    else:
        word_count = len(item.text.split())
    audio_seconds = synthesis.audio_seconds if synthesis else None
    scores = [w.score for w in timing.words if w.score is not None] if timing else []
    lexicon_notes = synthesis.params.get("lexicon_entries", []) if synthesis else []
    return ItemReportRow(
        item_id=item.item_id,
        manifest=item.manifest,
        line=item.line,
        voice=item.voice,
        language=item.language,
        characters=len(item.text),
        words=word_count,
        unspoken_words=" ".join(item.unspoken_words) or None,
        audio_seconds=audio_seconds,
        words_per_minute=round(word_count * 60 / audio_seconds, 1) if audio_seconds else None,
        synthesizer=synthesis.backend if synthesis else None,
        segments=len(synthesis.segments) if synthesis and synthesis.segments else None,
        chapters=len(item.chapters) or None,
        lexicon_entries="; ".join(lexicon_notes) or None,
        synthesis_attempts=synthesis.attempts if synthesis else None,
        asr_wer=synthesis.asr_wer if synthesis else None,
        detected_language=synthesis.detected_language if synthesis else None,
        language_probability=synthesis.language_probability if synthesis else None,
        language_mismatch=synthesis.language_mismatch if synthesis else None,
        voice_similarity=synthesis.voice_similarity if synthesis else None,
        voice_cloning=synthesis.voice_cloning if synthesis else None,
        timing_method=timing.method if timing else None,
        fallback_reason=timing.fallback_reason if timing else None,
        mean_word_score=timing.mean_score if timing else None,
        min_word_score=min(scores) if scores else None,
        untimed_words=timing.untimed_count if timing else None,
        low_confidence_words=(
            sum(1 for s in scores if s < low_confidence_below)
            if timing and low_confidence_below is not None
            else None
        ),
        cues=len(cues) if cues is not None else None,
        cue_rule_violations=dict(Counter(v for cue in cues or [] for v in cue.violations)),
        status=resolved_status.value if isinstance(resolved_status, ItemStatus) else str(resolved_status),
        error=error or (latest.error if latest else None),
        **{f"{kind}_key": key for kind, key in outputs.items()},
    )


# ----------------------------------------------------------------------------------------------------------
# CSV and summary


def _violations_text(violations: Mapping[str, int]) -> str:
    return ";".join(f"{rule}={count}" for rule, count in sorted(violations.items()))


def report_frame(rows: Iterable[ItemReportRow]) -> pd.DataFrame:
    """The rows as a DataFrame, one column per field; violations as ``rule=count;...`` text."""
    records = [
        {**row.model_dump(), "cue_rule_violations": _violations_text(row.cue_rule_violations)} for row in rows
    ]
    frame = pd.DataFrame(records, columns=list(ItemReportRow.model_fields))
    # Nullable integer columns, so that a missing value does not turn 12 into 12.0.
    integer_fields = [
        name
        for name, info in ItemReportRow.model_fields.items()
        if info.annotation is int or set(get_args(info.annotation)) == {int, type(None)}
    ]
    return frame.astype({name: "Int64" for name in integer_fields})


def report_csv(rows: Iterable[ItemReportRow]) -> str:
    """The report as CSV text (header = ItemReportRow field names, empty cells for missing values)."""
    return report_frame(rows).to_csv(index=False, lineterminator="\n")


def summarize(rows: Iterable[ItemReportRow]) -> dict[str, Any]:
    """Batch totals: items, per status, per timing method, fallbacks (and why), untimed and low-confidence
    words, cues, cue rule violations per rule, audio seconds."""
    rows = list(rows)
    violations: Counter[str] = Counter()
    for row in rows:
        violations.update(row.cue_rule_violations)
    return {
        "items": len(rows),
        "by_status": dict(Counter(row.status for row in rows)),
        "by_timing_method": dict(Counter(row.timing_method for row in rows if row.timing_method)),
        "fallbacks": sum(1 for row in rows if row.fallback_reason),
        "fallback_reasons": dict(Counter(row.fallback_reason for row in rows if row.fallback_reason)),
        "untimed_words": sum(row.untimed_words or 0 for row in rows),
        "low_confidence_words": sum(row.low_confidence_words or 0 for row in rows),
        "cues": sum(row.cues or 0 for row in rows),
        "cue_rule_violations": dict(sorted(violations.items())),
        "audio_seconds": round(sum(row.audio_seconds or 0.0 for row in rows), 3),
        "language_mismatches": sum(1 for row in rows if row.language_mismatch),
    }


# ----------------------------------------------------------------------------------------------------------
# HTML


# Past this many words an item's waveform shows the envelope alone (a 10,000-word programme would add ~2 MB of
# word marks to the page, too dense to read at the waveform's width); the page says so.
MAX_DRAWN_WORDS = 2000
MAX_OPEN_CUES = 200
WAVEFORM_WIDTH = 900


@dataclass
class Envelope:
    """The audio's highest and lowest sample in each of ``len(highs)`` consecutive columns, split like
    ``np.array_split`` (the first ``frames % columns`` columns one sample longer)."""

    highs: list[float]
    lows: list[float]
    frames: int
    sample_rate: int

    @staticmethod
    def column_starts(frames: int, columns: int) -> np.ndarray:
        size, longer = divmod(frames, columns)
        return np.concatenate([[0], np.cumsum([size + 1] * longer + [size] * (columns - longer))[:-1]]).astype(
            np.int64)

    @classmethod
    def from_blocks(cls, blocks: Iterable[tuple[int, np.ndarray]], frames: int, sample_rate: int, columns: int
                    ) -> Envelope:
        """The envelope of a signal read in order as (start, samples) blocks: only the columns are kept."""
        starts = cls.column_starts(frames, columns)
        highs, lows = np.full(columns, -np.inf), np.full(columns, np.inf)
        for offset, block in blocks:
            if not len(block):
                continue
            first = int(np.searchsorted(starts, offset, side="right")) - 1
            cuts = starts[np.searchsorted(starts, offset, side="right"):
                          np.searchsorted(starts, offset + len(block), side="left")] - offset
            pieces = np.concatenate([[0], cuts]).astype(np.int64)
            span = slice(first, first + len(pieces))
            highs[span] = np.maximum(highs[span], np.maximum.reduceat(block, pieces))
            lows[span] = np.minimum(lows[span], np.minimum.reduceat(block, pieces))
        return cls([float(h) for h in highs], [float(lo) for lo in lows], frames, sample_rate)

    @property
    def audio_ms(self) -> int:
        return int(self.frames * 1000 / self.sample_rate) if self.sample_rate and self.frames else 0


def waveform_columns(frames: int, sample_rate: int | None, words: list[WordTiming], width: int = WAVEFORM_WIDTH
                     ) -> int:
    """How many envelope columns the waveform draws for audio of ``frames`` samples beside these words (the
    audio's share of the drawn span, at most one per sample)."""
    audio_ms = int(frames * 1000 / sample_rate) if sample_rate and frames else 0
    spans = effective_spans(words) if words else {}
    total_ms = max([audio_ms, *(end for _, end in spans.values())], default=0) or 1
    return max(1, min(width * audio_ms // total_ms, frames))


@dataclass
class ItemMedia:
    """What the HTML page shows for one item: a playable URL, the audio for the waveform (its samples, float32
    mono, or its envelope read block by block from a long master), its words and cues. Any part may be missing."""

    audio_url: str | None = None
    samples: np.ndarray | None = None
    sample_rate: int | None = None
    words: list[WordTiming] = field(default_factory=list)
    cues: list[Cue] = field(default_factory=list)
    envelope: Envelope | None = None


def _clock(ms: int) -> str:
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes:02d}:{rest / 1000:06.3f}"


def waveform_svg(
    samples: np.ndarray | None,
    sample_rate: int | None,
    words: list[WordTiming],
    width: int = WAVEFORM_WIDTH,
    height: int = 120,
    envelope: Envelope | None = None,
) -> str:
    """An inline SVG: the audio's min/max envelope (from ``samples``, or ``envelope`` already reduced) with each
    word's span drawn over it (untimed words, placed between their neighbours, in red), the word as tooltip and,
    where there is room, as label. Past :data:`MAX_DRAWN_WORDS` words the envelope is drawn alone, and says so."""
    if envelope is None and samples is not None and len(samples) and sample_rate:
        samples = np.asarray(samples, dtype=np.float32).ravel()
        columns = waveform_columns(len(samples), sample_rate, words, width)
        envelope = Envelope.from_blocks([(0, samples)], len(samples), sample_rate, columns)
    audio_ms = envelope.audio_ms if envelope is not None else 0
    spans = effective_spans(words) if words else {}
    total_ms = max([audio_ms, *(end for _, end in spans.values())], default=0) or 1
    middle = height / 2
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="wave" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img">'
        )
    ]
    if envelope is not None:
        step = width * audio_ms / total_ms / len(envelope.highs)
        top = [f"{k * step:.1f},{middle - max(h, 0) * middle:.1f}" for k, h in enumerate(envelope.highs)]
        bottom = [
            f"{k * step:.1f},{middle - min(lo, 0) * middle:.1f}"
            for k, lo in reversed(list(enumerate(envelope.lows)))
        ]
        parts.append(f'<polygon class="env" points="{" ".join(top + bottom)}"/>')
    if len(words) > MAX_DRAWN_WORDS:
        parts.append(f'<text class="note" x="4" y="12">{len(words):,} words: word spans are drawn for items of '
                     f"up to {MAX_DRAWN_WORDS:,} words (the words JSON has every word's time)</text></svg>")
        return "".join(parts)
    for word in sorted(words, key=lambda w: w.index):
        start, end = spans[word.index]
        x = width * start / total_ms
        span_width = max(width * (end - start) / total_ms, 0.5)
        kind = "word" if word.timed else "word untimed"
        tip = html.escape(f"{word.text} {_clock(start)}-{_clock(end)}" + ("" if word.timed else " (untimed)"))
        parts.append(
            f'<g class="{kind}"><title>{tip}</title>'
            f'<rect x="{x:.1f}" y="0" width="{span_width:.1f}" height="{height}"/>'
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}"/>'
        )
        if span_width >= 7 * len(word.text):
            parts.append(f'<text x="{x + 2:.1f}" y="12">{html.escape(word.text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _cue_preview(cues: list[Cue]) -> str:
    """Every cue, each a seek button for the player; past :data:`MAX_OPEN_CUES` the list starts folded, so a long
    programme's section does not run for pages."""
    items = []
    for cue in cues:
        text = "<br>".join(html.escape(line) for line in cue.lines)
        flags = "".join(f'<span class="flag">{html.escape(v)}</span>' for v in cue.violations)
        items.append(
            f'<li data-start="{cue.start_ms / 1000:.3f}"><span class="time">{_clock(cue.start_ms)} &rarr; '
            f'{_clock(cue.end_ms)}</span> {flags}<div class="cue">{text}</div></li>'
        )
    listing = f'<ol class="cues">{"".join(items)}</ol>'
    if len(cues) <= MAX_OPEN_CUES:
        return listing
    flagged = sum(1 for cue in cues if cue.violations)
    return (f'<details class="cue-list"><summary>{len(cues):,} cues ({flagged:,} breaking the profile): show them'
            f"</summary>{listing}</details>")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;font-size:.8rem}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left}
section.item{border-top:1px solid #ddd;margin-top:1.5rem;padding-top:.5rem}
.wave{background:#f7f7f7;display:block;margin:.5rem 0}.env{fill:#4a6fa5}
.word rect{fill:#2a9d8f;fill-opacity:.12}.word line{stroke:#2a9d8f;stroke-width:1}
.untimed rect{fill:#e63946;fill-opacity:.25}.untimed line{stroke:#e63946;stroke-dasharray:3 2}
.word text{font-size:10px;fill:#333}.wave .note{font-size:11px;fill:#555}.cues{columns:2;font-size:.9rem}
.cues li{cursor:pointer;break-inside:avoid}
.cue{background:#111;color:#fff;display:inline-block;padding:2px 6px;margin:2px 0 6px}
.time{color:#666;font-family:monospace}
h2{margin-top:1.5rem}.totals{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;margin:0}.totals div{min-width:8rem}
.totals dt{font-size:.75rem;color:#666}.totals dd{margin:0;font-weight:600}
table.problems{margin-bottom:1rem}.error{color:#b00020;max-width:40rem}.none{color:#2a7d2a}
.charts{display:flex;flex-wrap:wrap;gap:1rem}.chart{margin:0}.chart figcaption{font-size:.85rem;font-weight:600}
.chart svg{background:#fafafa}.bar{fill:#4a6fa5}.bar.over{fill:#e63946}.axis{stroke:#999}
.limit{stroke:#e63946;stroke-width:2;stroke-dasharray:4 2}.limit-label{font-size:10px;fill:#e63946}
.tick{font-size:9px;fill:#555}.report th{cursor:pointer;background:#f0f0f0;position:sticky;top:0}
.report td.links a{margin-right:4px}.status-quarantined td,.status-failed td{background:#fff4f4}
.hint{font-size:.75rem;color:#666}.flag{background:#e63946;color:#fff;border-radius:3px;padding:0 4px;
font-size:.75rem;margin-right:2px}
"""

_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){var b=t.tBodies[0];
t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
var n=th.dataset.numeric,d=th.dataset.dir=th.dataset.dir==='1'?'-1':'1';
Array.from(b.rows).sort(function(x,y){var a=x.cells[i].textContent,c=y.cells[i].textContent;
if(n){a=a===''?-Infinity:parseFloat(a);c=c===''?-Infinity:parseFloat(c);return (a-c)*d;}
return a.localeCompare(c)*d;}).forEach(function(r){b.appendChild(r);});});});});
document.querySelectorAll('section.item').forEach(function(s){var a=s.querySelector('audio');if(!a)return;
s.querySelectorAll('.cues li').forEach(function(li){li.addEventListener('click',function(){
a.currentTime=parseFloat(li.dataset.start);a.play();});});});
"""


def _blank(value: Any) -> str:
    """A table cell: empty for a missing value, never ``None``."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return str(value)


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("narration", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.globals["blank"] = _blank

# The item table: status and error first; (heading, field, numeric).
TABLE_COLUMNS = (
    ("Status", "status", False),
    ("Error", "error", False),
    ("Item", "item_id", False),
    ("Manifest", "manifest", False),
    ("Line", "line", True),
    ("Voice", "voice", False),
    ("Language", "language", False),
    ("Synthesizer", "synthesizer", False),
    ("Detected language", "detected_language", False),
    ("Language p", "language_probability", True),
    ("Language mismatch", "language_mismatch", False),
    ("Voice similarity", "voice_similarity", True),
    ("Voice cloning", "voice_cloning", False),
    ("Timing", "timing_method", False),
    ("Seconds", "audio_seconds", True),
    ("Segments", "segments", True),
    ("Words", "words", True),
    ("WPM", "words_per_minute", True),
    ("Mean score", "mean_word_score", True),
    ("Cues", "cues", True),
    ("LUFS", "loudness_lufs", True),
    ("Peak dBTP", "true_peak_dbtp", True),
)
CHART_WIDTH, CHART_HEIGHT, CHART_LEFT, CHART_BOTTOM = 440, 160, 34, 16
SCORE_BINS = 20


@dataclass
class BatchCharts:
    """What the batch plots need from the item media, gathered while the items stream past: counts per bin,
    so it stays the same size whatever the batch's size."""

    cps_limit: float | None = None
    cps_counts: Counter = field(default_factory=Counter)  # whole characters per second -> cues
    score_counts: list[int] = field(default_factory=lambda: [0] * SCORE_BINS)

    def add(self, media: ItemMedia) -> None:
        for cue in media.cues:
            seconds = (cue.end_ms - cue.start_ms) / 1000
            if seconds > 0:
                self.cps_counts[int(len(" ".join(cue.lines)) / seconds)] += 1
        for word in media.words:
            if word.score is not None:
                self.score_counts[min(int(max(word.score, 0.0) * SCORE_BINS), SCORE_BINS - 1)] += 1


def _bar_chart(title: str, bars: list[tuple[str, float, str]], *, limit: tuple[float, str] | None = None,
               x_range: tuple[float, float] | None = None, bin_width: float = 1.0, over: float | None = None
               ) -> dict:
    """Geometry for the template's bar chart. ``bars``: (label, value, tooltip) in order; with ``x_range`` the
    labels are numbers placed on that axis (a histogram of ``bin_width`` bins), else the bars share the width
    evenly. Bar heights are magnitudes; the axis label keeps the sign (loudness is negative)."""
    plot_w, base = CHART_WIDTH - CHART_LEFT, CHART_HEIGHT - CHART_BOTTOM
    top = max((abs(v) for _, v, _ in bars), default=0) or 1
    signed_top = next((v for _, v, _ in bars if abs(v) == top), top)
    shapes, ticks = [], []
    count = max(len(bars), 1)
    for k, (label, value, tip) in enumerate(bars):
        if x_range:
            lo, hi = x_range
            x = CHART_LEFT + plot_w * (float(label) - lo) / (hi - lo)
            w = max(plot_w * bin_width / ((hi - lo) or 1) - 1, 1)
        else:
            x, w = CHART_LEFT + plot_w * k / count, max(plot_w / count - 1, 0.5)
        h = (base - 14) * abs(value) / top
        shapes.append({"x": x, "y": base - h, "w": w, "h": h, "tip": tip,
                       "over": over is not None and float(label) >= over})
    if x_range:
        lo, hi = x_range
        step = max(bin_width, round((hi - lo) / 8 / bin_width) * bin_width)
        ticks = [{"x": CHART_LEFT + plot_w * (v - lo) / (hi - lo), "label": f"{v:g}"}
                 for v in _frange(lo, hi - step / 2, step)]
    else:
        every = max(1, count // 8)
        ticks = [{"x": CHART_LEFT + plot_w * (k + 0.5) / count, "label": bars[k][0][:10]}
                 for k in range(0, len(bars), every)]
    limit_mark = None
    if limit is not None and x_range:
        lo, hi = x_range
        limit_mark = {"x": CHART_LEFT + plot_w * (limit[0] - lo) / (hi - lo), "label": limit[1]}
    return {"title": title, "width": CHART_WIDTH, "height": CHART_HEIGHT, "left": CHART_LEFT, "base": base,
            "top_label": _blank(signed_top), "bars": shapes, "ticks": ticks, "limit": limit_mark}


def _frange(lo: float, hi: float, step: float) -> list[float]:
    values, v = [], lo
    while v <= hi + 1e-9:
        values.append(v)
        v += step
    return values


def batch_charts(rows: list[ItemReportRow], charts: BatchCharts) -> list[dict]:
    """The four batch plots: reading speed per cue against the profile's limit, word-confidence distribution,
    duration per item and loudness per item."""
    items = [r for r in rows if r.item_id is not None]
    cps_hi = max([*charts.cps_counts, int(charts.cps_limit or 0) + 2, 10]) + 1
    limit = (charts.cps_limit, f"limit {charts.cps_limit:g} cps") if charts.cps_limit else None
    cps = _bar_chart(
        "Reading speed per cue (characters per second)",
        [(str(c), n, f"{c}-{c + 1} cps: {n} cues") for c, n in sorted(charts.cps_counts.items())],
        limit=limit, x_range=(0, cps_hi), over=charts.cps_limit)
    scores = _bar_chart(
        "Word confidence (words per score bin)",
        [(str(k / SCORE_BINS), n, f"score {k / SCORE_BINS:.2f}-{(k + 1) / SCORE_BINS:.2f}: {n} words")
         for k, n in enumerate(charts.score_counts) if n],
        x_range=(0, 1), bin_width=1 / SCORE_BINS)
    durations = _bar_chart(
        "Duration per item (seconds)",
        [(r.item_id, r.audio_seconds, f"{r.item_id}: {r.audio_seconds:.2f} s") for r in items if r.audio_seconds])
    loudness = _bar_chart(
        "Loudness per item (LUFS, integrated)",
        [(r.item_id, r.loudness_lufs, f"{r.item_id}: {r.loudness_lufs:.1f} LUFS"
          + (f" (target {r.loudness_target_lufs:g})" if r.loudness_target_lufs is not None else ""))
         for r in items if r.loudness_lufs is not None])
    return [cps, scores, durations, loudness]


def problems(rows: list[ItemReportRow], quarantine: Iterable[LineError] | None = None) -> dict[str, Any]:
    """What needs an operator's eye, by kind. ``quarantine`` gives the rejected lines' fields; without it the
    quarantined rows' error text stands in for the reason."""
    quarantined_rows = [r for r in rows if r.status == ItemStatus.QUARANTINED.value]
    if quarantine is not None:
        quarantined = [{"manifest": e.manifest, "line": e.line, "field": e.field, "reason": e.reason}
                       for e in quarantine]
    else:
        quarantined = [{"manifest": r.manifest, "line": r.line, "field": None, "reason": r.error or ""}
                       for r in quarantined_rows]
    items = [r for r in rows if r.status != ItemStatus.QUARANTINED.value]
    fallbacks = [(r, f"timing by {r.timing_method}", r.fallback_reason) for r in items if r.fallback_reason]
    fallbacks += [(r, "loudness not normalised", r.loudness_error) for r in items if r.loudness_error]
    fallbacks += [(r, "spoken language differs", f"detected {r.detected_language!r} (p={r.language_probability:.2f}), "
                   f"requested {r.language!r}") for r in items if r.language_mismatch]
    found = {
        "quarantined": quarantined,
        "failed": [r for r in items if r.status != ItemStatus.DONE.value],
        "fallbacks": fallbacks,
        "low_confidence": [r for r in items if (r.low_confidence_words or 0) + (r.untimed_words or 0)],
        "rule_breaks": [r for r in items if r.cue_rule_violations],
    }
    return {**found, "any": any(found.values())}


def _totals(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    def text(value: Any) -> str:
        if isinstance(value, dict):
            return ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        return str(value)

    labels = {"items": "Lines", "by_status": "Status", "by_timing_method": "Timing", "fallbacks": "Fallbacks",
              "fallback_reasons": "Fallback reasons", "untimed_words": "Untimed words",
              "low_confidence_words": "Low-confidence words", "cues": "Cues",
              "cue_rule_violations": "Cues breaking a rule", "audio_seconds": "Audio seconds",
              "language_mismatches": "Language mismatches"}
    return [(labels.get(key, key), text(value)) for key, value in summary.items()]


def report_html_head(
    rows: Iterable[ItemReportRow],
    title: str = "Narration batch report",
    *,
    links: Mapping[str, Mapping[str, str]] | None = None,
    downloads: Mapping[str, str] | None = None,
    quarantine: Iterable[LineError] | None = None,
    charts: BatchCharts | None = None,
) -> str:
    """The page up to the item sections: totals, problems, batch plots and the item table.

    ``links``: item_id -> output kind -> URL (the deliverables' download links); ``downloads``: label -> URL
    for the batch's own files; ``charts``: what the plots gathered from the items' media."""
    rows = list(rows)
    links = links or {}
    table = [
        (row, [_blank(getattr(row, name)) for _, name, _ in TABLE_COLUMNS],
         list((links.get(row.item_id) or {}).items()) if row.item_id is not None else [])
        for row in rows
    ]
    return _TEMPLATES.get_template("report_head.html.j2").render(
        title=title,
        style=markupsafe.Markup(_STYLE),
        totals=_totals(summarize(rows)),
        downloads=list((downloads or {}).items()),
        problems=problems(rows, quarantine),
        charts=batch_charts(rows, charts or BatchCharts()),
        columns=[(heading, numeric) for heading, _, numeric in TABLE_COLUMNS],
        table=table,
    )


REPORT_HTML_TAIL = f"<script>{_SCRIPT}</script></body></html>\n"


def item_section(row: ItemReportRow, media: ItemMedia) -> str:
    """One item's section: heading, <audio> player on its URL, SVG waveform with word boundaries, cue preview."""
    heading = f"{html.escape(row.item_id)} <small>{html.escape(row.status)}</small>"
    audio = (
        f'<audio controls preload="none" src="{html.escape(media.audio_url, quote=True)}"></audio>'
        if media.audio_url
        else ""
    )
    wave = waveform_svg(media.samples, media.sample_rate, media.words, envelope=media.envelope)
    notes = []
    if row.segments:
        notes.append(f"one programme of {row.segments:,} segments" + (f", {row.chapters} chapters" if row.chapters
                                                                       else ""))
    if row.lexicon_entries:
        notes.append(f"lexicon entries: {row.lexicon_entries}")
    about = f'<p class="about">{html.escape(" · ".join(notes))}</p>' if notes else ""
    return (
        f'<section class="item" id="item-{html.escape(row.item_id, quote=True)}">'
        f"<h2>{heading}</h2>{about}{audio}"
        f"{wave}{_cue_preview(media.cues)}</section>"
    )


def report_html(
    rows: Iterable[ItemReportRow],
    items_media: Mapping[str, ItemMedia] | None = None,
    title: str = "Narration batch report",
    *,
    links: Mapping[str, Mapping[str, str]] | None = None,
    quarantine: Iterable[LineError] | None = None,
    cps_limit: float | None = None,
) -> str:
    """A self-contained HTML page: totals, problems, batch plots, the item table with ``links`` (item_id ->
    output kind -> URL) and, per item in ``items_media`` (keyed by item_id), an <audio> player on its URL, an SVG
    waveform with word boundaries and the cue preview (clicking a cue plays from it). All text is HTML-escaped;
    nothing but the audio and the links is loaded from elsewhere. A batch's page is written piece by piece from
    the same functions (``narration.deliver``).
    """
    rows = list(rows)
    items_media = items_media or {}
    charts = BatchCharts(cps_limit=cps_limit)
    sections = []
    for row in rows:
        if row.item_id is not None and row.item_id in items_media:
            charts.add(items_media[row.item_id])
            sections.append(item_section(row, items_media[row.item_id]))
    head = report_html_head(rows, title, links=links, quarantine=quarantine, charts=charts)
    return head + "".join(sections) + REPORT_HTML_TAIL
