"""Batch delivery: the per-batch CSV report, HTML report and summary with presigned download URLs.

It reads only S3 (the plan, the quarantine, each item's result record and outputs), so it accounts for every
manifest line even when workers died: an item without a result record is reported as not completed. Every output
a row names is checked before the row is reported (the audio decodes and has its record's length, the words JSON
parses, the other files are there): a row whose object is missing, truncated or corrupt says so, names the
object, and gets no download link for it. ``report.csv``, ``report.html`` and ``summary.json`` are written from
the same checked rows, the summary last.

Items are read a few at a time (:meth:`Storage.imap`) and each one's HTML section is written to a file at once, so
the report's memory stays flat in the batch size and in an item's length (each item's audio is reduced to its
waveform's columns block by block).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable

import numpy as np

from narration import audio as audio_io
from narration.layout import BatchLayout
from narration.lifecycle import manifest_states
from narration.pipeline import read_record
from narration.plan import load_plan, load_quarantine
from narration.report import (
    OUTPUT_KINDS,
    REPORT_HTML_TAIL,
    BatchCharts,
    Envelope,
    ItemMedia,
    ItemReportRow,
    item_row,
    item_section,
    quarantine_row,
    report_csv,
    report_html_head,
    summarize,
    waveform_columns,
)
from narration.schema import Cue, ItemSpec, ItemStatus, TimingRecord
from narration.settings import Settings
from narration.storage import Storage
from narration.subtitles import get_profile

log = logging.getLogger(__name__)
WAVEFORM_BLOCK_SAMPLES = 1 << 18  # samples decoded at a time for the waveform
NO_RESULT = "item did not complete: no result record (a worker step failed)"


def result_row(storage: Storage, layout: BatchLayout, item: ItemSpec) -> ItemReportRow:
    """The item's row as its result record states it; a missing or unreadable record is a failed row."""
    row, problem = read_record(storage, layout.result(item.item_id), ItemReportRow)
    if row is not None:
        return row
    if problem == "missing":
        return item_row(item, status=ItemStatus.FAILED, error=NO_RESULT)
    return item_row(item, status=ItemStatus.FAILED,
                    error=f"{storage.uri(layout.result(item.item_id))}: result record {problem}")


def collect_rows(storage: Storage, batch_id: str) -> list[ItemReportRow]:
    """Every line's row as the records state it (outputs not checked; :func:`write_batch_report` checks them)."""
    layout = BatchLayout(batch_id)
    plan = load_plan(storage, batch_id)
    rows = storage.map(lambda item: result_row(storage, layout, item), plan.items)
    rows.extend(quarantine_row(err) for err in load_quarantine(storage, batch_id))
    return rows


def output_keys(row: ItemReportRow) -> dict[str, str]:
    return {kind: getattr(row, f"{kind}_key") for kind in OUTPUT_KINDS if getattr(row, f"{kind}_key")}


def presign_output(storage: Storage, layout: BatchLayout, key: str, expiry_s: int) -> str | None:
    """A download link for one of this batch's outputs; None (and a warning) for any key outside the batch, so a
    tampered or stale record can never hand out links to voices, manifests or other batches."""
    if not _inside(layout, key):
        log.warning("not presigning %s: outside batch prefix %s", key, layout.root)
        return None
    return storage.presign(key, expiry_s)


def _inside(layout: BatchLayout, key: str) -> bool:
    return key.startswith(layout.root) and ".." not in key.split("/")


def checked_item(storage: Storage, layout: BatchLayout, item: ItemSpec, expiry_s: int, present: dict[str, int]
                 ) -> tuple[ItemReportRow, ItemMedia]:
    """(the item's checked row, what its HTML section shows). Each output the row names is checked (``present``: the
    batch's object sizes by key): an invalid one is dropped from the row (so no link is made for it), the row
    ends ``failed`` and its error names the object and what is wrong with it."""
    row = result_row(storage, layout, item)
    media = ItemMedia()
    problems: dict[str, str] = {}
    for kind, key in output_keys(row).items():
        if not _inside(layout, key):
            problems[kind] = f"{key}: outside this batch's prefix {layout.root}"
        elif key not in present:
            problems[kind] = f"{storage.uri(key)}: missing"
        elif present[key] == 0:
            problems[kind] = f"{storage.uri(key)}: empty"
    if row.timing_method:  # first: the waveform's columns depend on the words' span
        timing = read_record(storage, layout.timing(row.item_id, row.timing_method), TimingRecord)[0]
        media.words = timing.words if timing else []
    checks: dict[str, Callable[[str], None]] = {"audio": lambda key: _read_audio(storage, key, row, media),
                                               "json": lambda key: _read_cues(storage, key, media)}
    for kind, check in checks.items():
        key = getattr(row, f"{kind}_key")
        if key and kind not in problems:
            try:
                check(key)
            except (KeyError, ValueError) as exc:
                problems[kind] = f"{storage.uri(key)}: {exc}"
    if problems:
        log.warning("%s: %s", item.item_id, "; ".join(problems.values()))
        error = "; ".join(problems.values()) + (f"; {row.error}" if row.error else "")
        row = row.model_copy(update={"status": ItemStatus.FAILED.value, "error": error,
                                     **{f"{kind}_key": None for kind in problems}})
    if row.audio_key:
        media.audio_url = presign_output(storage, layout, row.audio_key, expiry_s)
    return row, media


def _read_audio(storage: Storage, key: str, row: ItemReportRow, media: ItemMedia) -> None:
    """Read the item's audio for the waveform: its header and size first (one ranged GET), then the file, whose
    envelope is reduced block by block (an hour's master is never decoded whole); raises AudioError (a ValueError)
    when it is not the audio its record describes."""
    prefix, size = storage.get_prefix(key, audio_io.WAV_HEADER_BYTES)
    problem = audio_io.wav_problem(prefix, size, seconds=row.audio_seconds)
    if problem:
        raise audio_io.AudioError(problem)
    with tempfile.TemporaryDirectory(prefix="narration-wave-") as tmp:
        path = storage.download_file(key, os.path.join(tmp, "audio.wav"))
        with audio_io.WavFileReader(path) as reader:
            columns = waveform_columns(reader.frames, reader.sample_rate, media.words)
            media.envelope = Envelope.from_blocks(
                ((start, block.astype(np.float32)) for start, block in reader.blocks(WAVEFORM_BLOCK_SAMPLES)),
                reader.frames, reader.sample_rate, columns)
        media.sample_rate = reader.sample_rate


def _read_cues(storage: Storage, key: str, media: ItemMedia) -> None:
    try:
        document = json.loads(storage.get_bytes(key))
        media.cues = [Cue.model_validate(c) for c in document.get("cues", [])]
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"not a valid words JSON document ({str(exc).splitlines()[0][:200]})") from exc


def write_batch_report(storage: Storage, settings: Settings, batch_id: str) -> dict:
    """Write report.csv, report.html and summary.json from the same checked rows; returns the summary.

    The old summary is deleted first and the new one written last: it carries the manifests' verdict, so while
    the rows are being rewritten no summary vouches for them."""
    layout = BatchLayout(batch_id)
    plan = load_plan(storage, batch_id)
    expiry = settings.presign_expiry_s
    storage.delete(layout.summary)
    present = storage.list_sizes(layout.root + "items/")  # one request per thousand objects
    rows: list[ItemReportRow] = []
    charts = BatchCharts(cps_limit=get_profile(plan.options.subtitle_profile).max_cps)
    with tempfile.TemporaryDirectory(prefix="narration-report-") as tmp:
        sections_path, page_path = os.path.join(tmp, "sections.html"), os.path.join(tmp, "report.html")
        with open(sections_path, "w", encoding="utf-8") as sections:
            # At most 2 x NARRATION_S3_CONCURRENCY items in flight, each holding its waveform's columns only.
            for row, media in storage.imap(lambda item: checked_item(storage, layout, item, expiry, present),
                                           plan.items):
                rows.append(row)
                charts.add(media)
                sections.write(item_section(row, media))
        quarantine = load_quarantine(storage, batch_id)
        rows.extend(quarantine_row(err) for err in quarantine)
        storage.put_text(layout.report_csv, report_csv(rows))
        # One link per deliverable, shared by the page and the summary.
        item_links = {
            row.item_id: links for row in rows
            if (links := {kind: url for kind, key in output_keys(row).items()
                          if (url := presign_output(storage, layout, key, expiry))})
        }
        csv_link = presign_output(storage, layout, layout.report_csv, expiry)
        batch_links = {"report.csv": csv_link, "summary.json": presign_output(storage, layout, layout.summary, expiry)}
        with open(page_path, "w", encoding="utf-8") as page, open(sections_path, encoding="utf-8") as sections:
            page.write(report_html_head(rows, f"Narration batch {batch_id}", links=item_links,
                                        downloads={k: v for k, v in batch_links.items() if v},
                                        quarantine=quarantine, charts=charts))
            shutil.copyfileobj(sections, page)
            page.write(REPORT_HTML_TAIL)
        storage.upload_file(layout.report_html, page_path)
    summary = summarize(rows)
    summary.update({
        "batch_id": layout.batch_id,
        "bucket": storage.bucket,
        "prefix": layout.root,
        "report_csv": layout.report_csv,
        "report_html": layout.report_html,
        "presigned_url_expiry_s": expiry,
        "manifests": manifest_states(plan, rows),
        "downloads": {
            "report_csv": csv_link,
            "report_html": presign_output(storage, layout, layout.report_html, expiry),
            "items": item_links,
        },
    })
    storage.put_json(layout.summary, summary)
    return summary
