"""The batch report against corrupt, truncated and missing objects in the real S3 server: each such object makes
its item's row say so (naming the object and what is wrong), gets no link, never fails the report, and the three
report files say the same; the manifests' verdict comes from the same checked rows."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter

from narration.audio import WAV_HEADER_BYTES, read_wav_header
from narration.deliver import write_batch_report
from narration.layout import SUBTITLE_FORMATS, BatchLayout
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.render import render_chunk
from narration.settings import Settings
from tests.dag_runs import jsonl

FORMATS = list(SUBTITLE_FORMATS)
IDS = ["ok", "garbage", "cut", "nosrt", "badjson", "badresult"]


def test_corrupt_truncated_and_missing_objects_are_item_faults_in_the_report(storage, narrator):
    lines = [{"id": i, "text": f"The {i} item reads one short sentence."} for i in IDS]
    storage.put_bytes("incoming/integrity.jsonl", jsonl(*lines))
    plan = plan_batch(storage, Settings(), "integrity", ["incoming/integrity.jsonl"], BatchOptions(chunk_size=6),
                      {"narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, Settings(), chunk)
    align_chunk(storage, Settings(), chunk)
    render = render_chunk(storage, Settings(), chunk.model_copy(update={"formats": FORMATS}))
    assert {i.status.value for i in render.items} == {"done"}

    layout = BatchLayout("integrity")
    uri = f"s3://{storage.bucket}/{layout.root}items"
    # The delivered master is what the report links.
    master = {i: layout.delivery_audio(i, "wav") for i in ("garbage", "cut")}
    frames = read_wav_header(storage.get_bytes(master["cut"])[:WAV_HEADER_BYTES]).frames
    cut_to = read_wav_header(storage.get_bytes(master["cut"])[:WAV_HEADER_BYTES]).data_offset + 8 * 3
    storage.put_bytes(master["garbage"], bytes(range(256)) * 16)
    storage.put_bytes(master["cut"], storage.get_bytes(master["cut"])[:cut_to])
    storage.delete(layout.subtitle("nosrt", "srt"))
    storage.put_text(layout.subtitle("badjson", "json"), '{"words": [')
    storage.put_text(layout.result("badresult"), "not a record")

    summary = write_batch_report(storage, Settings(), "integrity")

    rows = {r["item_id"]: r for r in csv.DictReader(io.StringIO(storage.get_text(layout.report_csv)))}
    assert {i: r["status"] for i, r in rows.items()} == {"ok": "done", **{i: "failed" for i in IDS[1:]}}
    assert rows["garbage"]["error"].startswith(f"{uri}/garbage/narration.wav: not a PCM WAV file: no RIFF/WAVE header")
    assert rows["cut"]["error"].startswith(
        f"{uri}/cut/narration.wav: truncated WAV: its header states {frames:,} frames, 8 present")
    assert rows["nosrt"]["error"].startswith(f"{uri}/nosrt/subtitles.srt: missing")
    assert rows["badjson"]["error"].startswith(f"{uri}/badjson/words.json: not a valid words JSON document")
    assert rows["badresult"]["error"].startswith(f"{uri}/badresult/result.json: result record not a valid "
                                                 "ItemReportRow")
    # The invalid object is dropped from its row, the valid ones stay: links are made for exactly those.
    assert (rows["garbage"]["audio_key"], rows["cut"]["audio_key"], rows["nosrt"]["srt_key"]) == ("", "", "")
    assert rows["nosrt"]["vtt_key"] and rows["badjson"]["audio_key"] and not rows["badjson"]["json_key"]
    links = summary["downloads"]["items"]
    assert set(links["ok"]) == {"audio", *FORMATS}
    assert set(links["garbage"]) == set(links["cut"]) == set(FORMATS)
    assert set(links["nosrt"]) == {"audio", *FORMATS} - {"srt"}
    assert "badresult" not in links

    # The three files agree.
    assert summary["by_status"] == dict(Counter(r["status"] for r in rows.values())) == {"done": 1, "failed": 5}
    page = storage.get_text(layout.report_html)
    sections = dict(re.findall(r'id="item-([^"]+)"><h2>[^<]+ <small>([a-z_]+)</small>', page))
    assert sections == {i: r["status"] for i, r in rows.items()}
    players = re.findall(r'<audio controls preload="none" src="[^"]*/items/([^/]+)/narration\.wav', page)
    assert players == ["ok", "nosrt", "badjson"], "no player for audio that failed its check"
    assert storage.get_json(layout.summary) == summary

    # The manifest's verdict comes from the same rows.
    assert summary["manifests"]["incoming/integrity.jsonl"] == {
        "state": "incomplete", "valid_lines": 6, "delivered": 1,
        "missing": {"garbage": ["audio"], "cut": ["audio"], "nosrt": ["srt"], "badjson": ["json"],
                    "badresult": ["audio", *FORMATS]}}
