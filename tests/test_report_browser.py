"""The batch's report.html from the real pipeline against the local S3 server, rendered in headless Chromium: the
problems section lists the quarantined line, the item table links every deliverable, and every link the page holds
answers a plain GET from the local S3 server. A screenshot goes to $NARRATION_ARTIFACTS (default ./artifacts/)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest

from narration.deliver import write_batch_report
from narration.layout import SUBTITLE_FORMATS, BatchLayout
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.render import render_chunk
from narration.settings import Settings
from tests.browser import CHROMIUM_ARGS, playwright_and_chromium
from tests.dag_runs import jsonl

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "incoming/browser.jsonl"


@pytest.fixture(scope="module")
def browser():
    return playwright_and_chromium("the report page")


def test_report_page_lists_problems_and_every_link_downloads(s3_server, storage, narrator, browser, tmp_path):
    sync_api, chromium = browser
    lines = [{"id": "one", "text": "The first item reads one short sentence."},
             {"id": "two", "text": "The second item is a little longer, with a comma and two clauses."},
             {"id": "bad", "text": "Nobody speaks as this voice.", "voice": "nobody-here"}]
    storage.put_bytes(MANIFEST, jsonl(*lines))
    plan = plan_batch(storage, Settings(), "browser", [MANIFEST], BatchOptions(chunk_size=4), {"narrator"})
    assert plan.quarantined == 1
    chunk = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, Settings(), chunk)
    align_chunk(storage, Settings(), chunk)
    render_chunk(storage, Settings(), chunk.model_copy(update={"formats": list(SUBTITLE_FORMATS)}))
    summary = write_batch_report(storage, Settings(), "browser")
    assert summary["by_status"] == {"done": 2, "quarantined": 1}
    page_file = tmp_path / "report.html"
    page_file.write_text(storage.get_text(BatchLayout("browser").report_html), encoding="utf-8")

    artifacts = Path(os.environ.get("NARRATION_ARTIFACTS") or REPO / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = chrome.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_file.as_uri())
            quarantined = page.locator("#problems table.quarantined tbody tr")
            assert quarantined.count() == 1
            cells = quarantined.first.locator("td").all_inner_texts()
            assert cells[0] == MANIFEST.rsplit("/", 1)[-1] and cells[1] == "3" and cells[2] == "voice"
            assert "nobody-here" in cells[3]
            # The sections come in the operator's order: totals, problems, plots, items, then the waveforms.
            order = page.eval_on_selector_all("body > section", "s => s.map(e => e.id)")
            assert order[:4] == ["totals", "problems", "plots", "items"] and order[4:] == ["item-one", "item-two"]
            assert page.locator("#plots svg").count() == 4
            assert page.locator("#plots .limit").count() == 1  # the profile's cps limit on the reading-speed plot
            table_text = page.locator("#items table").inner_text()
            assert "None" not in table_text and "<NA>" not in table_text and "nan" not in table_text
            row_links = page.eval_on_selector_all(
                "#items tbody tr", "rs => rs.map(r => Array.from(r.querySelectorAll('td.links a'), a => a.text))")
            assert sorted(map(sorted, row_links)) == sorted(
                [[], *[sorted(summary["downloads"]["items"][i]) for i in ("one", "two")]])
            urls = page.eval_on_selector_all("a[href], audio[src]", "es => es.map(e => e.href || e.src)")
            anchors = page.eval_on_selector_all("a[href^='#']", "es => es.map(e => e.getAttribute('href'))")
            page.screenshot(path=str(artifacts / "report-page.png"), full_page=True)
        finally:
            chrome.close()

    # Every in-page link has its target; every other link is a download from the S3 server.
    for anchor in anchors:
        assert page_file.read_text(encoding="utf-8").count(f'id="{anchor[1:]}"') == 1, anchor
    downloads = [u for u in urls if not u.startswith(page_file.as_uri())]
    assert len(downloads) >= 2 * (len(SUBTITLE_FORMATS) + 1) + 2  # each item's files and players, CSV, summary
    for url in downloads:
        assert url.startswith(s3_server.endpoint_url), url
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200 and response.read(), url
