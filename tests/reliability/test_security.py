"""Download links: only for this batch's outputs, whatever an item record claims, and with the configured expiry."""

from __future__ import annotations

import html
import re
import urllib.parse

from narration.deliver import write_batch_report
from narration.layout import BatchLayout
from narration.plan import BatchOptions, plan_batch
from narration.report import ItemReportRow
from narration.settings import Settings
from tests.dag_runs import jsonl


def test_links_are_made_only_for_this_batchs_outputs_and_expire_as_configured(storage, narrator, monkeypatch):
    monkeypatch.setenv("NARRATION_PRESIGN_EXPIRY_S", "120")
    storage.put_bytes("incoming/sec.jsonl", jsonl({"id": "s1", "text": "One."}, {"id": "s2", "text": "Two."}))
    plan_batch(storage, Settings(), "sec", ["incoming/sec.jsonl"], BatchOptions(), {"narrator"})
    layout = BatchLayout("sec")
    storage.put_text(layout.subtitle("s1", "srt"), "1\n00:00:00,000 --> 00:00:01,000\nOne.\n")
    storage.put_text("batches/other/items/x/subtitles.vtt", "WEBVTT\n")
    # s1's record is genuine; s2's was tampered with to point at the voice library and another batch.
    storage.put_json(layout.result("s1"), ItemReportRow(item_id="s1", manifest="sec.jsonl", line=1, status="done",
                                                        srt_key=layout.subtitle("s1", "srt")))
    storage.put_json(layout.result("s2"), ItemReportRow(
        item_id="s2", manifest="sec.jsonl", line=2, status="done", audio_key="voices/narrator/reference.wav",
        vtt_key="batches/other/items/x/subtitles.vtt", srt_key=layout.root + "items/../../other/items/x/subtitles.vtt"))

    summary = write_batch_report(storage, Settings(), "sec")
    links = summary["downloads"]["items"]
    assert set(links) == {"s1"} and set(links["s1"]) == {"srt"}
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(links["s1"]["srt"]).query)
    assert query["X-Amz-Expires"] == ["120"] and summary["presigned_url_expiry_s"] == 120
    # The page links exactly the summary's item links and the batch's own report files, nothing outside the batch.
    page = storage.get_text(layout.report_html)
    signed = [html.unescape(u) for u in re.findall(r'(?:href|src)="([^"#][^"]*)"', page)]
    paths = {urllib.parse.urlsplit(u).path for u in signed}
    assert paths == {f"/{storage.bucket}/{key}" for key in (layout.subtitle("s1", "srt"), layout.report_csv,
                                                             layout.summary)}, "no link may leave the batch"
