"""Batch delivery: the per-batch CSV report, HTML report and summary with presigned download URLs.

It reads only S3 (the plan, the quarantine and each item's result record), so it accounts for every manifest line
even when workers died: an item without a result record is reported as not completed.
"""

from __future__ import annotations

import logging

from narration import audio as audio_io
from narration.layout import BatchLayout
from narration.plan import load_plan, load_quarantine
from narration.report import (
    OUTPUT_KINDS,
    ItemMedia,
    ItemReportRow,
    item_row,
    quarantine_row,
    report_csv,
    report_html,
    summarize,
)
from narration.schema import Cue, ItemStatus, TimingRecord
from narration.settings import Settings
from narration.storage import Storage

log = logging.getLogger(__name__)


def collect_rows(storage: Storage, batch_id: str) -> list[ItemReportRow]:
    layout = BatchLayout(batch_id)
    plan = load_plan(storage, batch_id)
    docs = storage.map(lambda item: storage.get_json_or_none(layout.result(item.item_id)), plan.items)
    rows: list[ItemReportRow] = []
    for item, doc in zip(plan.items, docs):
        if doc:
            rows.append(ItemReportRow.model_validate(doc))
        else:
            rows.append(item_row(item, status=ItemStatus.FAILED,
                                 error="item did not complete: no result record (a worker step failed)"))
    rows.extend(quarantine_row(err) for err in load_quarantine(storage, batch_id))
    return rows


def output_keys(row: ItemReportRow) -> dict[str, str]:
    return {kind: getattr(row, f"{kind}_key") for kind in OUTPUT_KINDS if getattr(row, f"{kind}_key")}


def presign_output(storage: Storage, layout: BatchLayout, key: str, expiry_s: int) -> str | None:
    """A download link for one of this batch's outputs; None (and a warning) for any key outside the batch, so a
    tampered or stale record can never hand out links to voices, manifests or other batches."""
    if not key.startswith(layout.root) or ".." in key.split("/"):
        log.warning("not presigning %s: outside batch prefix %s", key, layout.root)
        return None
    return storage.presign(key, expiry_s)


def _media_for(storage: Storage, layout: BatchLayout, row: ItemReportRow, expiry_s: int) -> ItemMedia:
    """What the HTML report shows for an item: presigned audio URL, samples for the waveform, words and cues."""
    media = ItemMedia()
    if row.audio_key and row.audio_key.startswith(layout.root):
        media.audio_url = presign_output(storage, layout, row.audio_key, expiry_s)
        try:
            media.samples, media.sample_rate = audio_io.from_wav_bytes(storage.get_bytes(row.audio_key))
        except KeyError:
            pass
    if row.timing_method:
        doc = storage.get_json_or_none(layout.timing(row.item_id, row.timing_method))
        if doc:
            media.words = TimingRecord.model_validate(doc).words
    if row.json_key and row.json_key.startswith(layout.root):
        media.cues = [Cue.model_validate(c) for c in storage.get_json(row.json_key).get("cues", [])]
    return media


def write_batch_report(storage: Storage, settings: Settings, batch_id: str) -> dict:
    """Write report.csv, report.html and summary.json; returns the summary."""
    layout = BatchLayout(batch_id)
    rows = collect_rows(storage, batch_id)
    storage.put_text(layout.report_csv, report_csv(rows))
    expiry = settings.presign_expiry_s
    item_rows = [row for row in rows if row.item_id]
    media = dict(zip((row.item_id for row in item_rows),
                     storage.map(lambda row: _media_for(storage, layout, row, expiry), item_rows)))
    storage.put_text(layout.report_html, report_html(rows, media))
    summary = summarize(rows)
    summary.update({
        "batch_id": layout.batch_id,
        "bucket": storage.bucket,
        "prefix": layout.root,
        "report_csv": layout.report_csv,
        "report_html": layout.report_html,
        "presigned_url_expiry_s": expiry,
        "downloads": {
            "report_csv": presign_output(storage, layout, layout.report_csv, expiry),
            "report_html": presign_output(storage, layout, layout.report_html, expiry),
            "items": {
                row.item_id: links for row in rows
                if (links := {kind: url for kind, key in output_keys(row).items()
                              if (url := presign_output(storage, layout, key, expiry))})
            },
        },
    })
    storage.put_json(layout.summary, summary)
    return summary
