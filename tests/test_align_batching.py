"""The align step hands its short items to the aligner in groups (``NARRATION_ALIGNMENT_BATCH_SIZE``) and a long
item's windows likewise; each item's record is what aligning it alone gives, and one item's failure in a group stays
its own. Real moto S3, espeak-ng and pocketsphinx (whose ``align_many`` is the interface's item-by-item default;
WhisperX's batched emissions are covered in tests/heavy/test_batching.py)."""

from __future__ import annotations

import json
import logging

from narration.dev.faults import ENV_VAR
from narration.layout import BatchLayout
from narration.pipeline import align_chunk, alignment_cache_key, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.schema import SynthesisRecord, TimingRecord
from narration.settings import Settings
from tests.dag_runs import jsonl

SHORT = ["The river runs past the old mill.", "Where did the summer go?", "She sold tickets in two days!",
         "Bright stars filled the sky.", "Nobody spoke of the storm."]
LONG = "\n\n".join(["The harbour was quiet that morning. Gulls circled above the boats.",
                    "By noon the wind had turned. The fishermen pulled their nets in early."])


def synthesized_chunks(storage, batch_id: str):
    lines = [{"id": f"s{n}", "text": text} for n, text in enumerate(SHORT)] + [{"id": "story", "text": LONG}]
    storage.put_bytes(f"incoming/{batch_id}.jsonl", jsonl(*lines))
    plan = plan_batch(storage, Settings(), batch_id, [f"incoming/{batch_id}.jsonl"], BatchOptions(chunk_size=16),
                      {"narrator"})
    chunks = [load_chunk(storage, ref.key) for ref in plan.chunks]
    for chunk in chunks:
        synthesize_chunk(storage, Settings(), chunk)
    return chunks


def timings(storage, batch_id: str, chunks) -> dict[str, TimingRecord]:
    layout = BatchLayout(batch_id)
    return {item.item_id: TimingRecord.model_validate(storage.get_json(layout.timing(item.item_id, "pocketsphinx")))
            for chunk in chunks for item in chunk.items}


def words_of(record: TimingRecord) -> list[tuple]:
    return [(w.index, w.text, w.start_ms, w.end_ms) for w in record.words]


def test_grouped_alignment_gives_each_item_the_timings_it_gets_alone(storage, narrator, caplog):
    chunks = synthesized_chunks(storage, "grouped")
    assert [len(c.items) for c in chunks] == [len(SHORT), 1]  # the long item has its own chunk
    for chunk in chunks:
        align_chunk(storage, Settings(alignment_batch_size=1), chunk)
    alone = timings(storage, "grouped", chunks)

    caplog.set_level(logging.INFO, logger="narration.pipeline")
    forced = [c.model_copy(update={"params": {"force": True}}) for c in chunks]
    results = [align_chunk(storage, Settings(alignment_batch_size=2), chunk) for chunk in forced]
    grouped = timings(storage, "grouped", chunks)

    assert [r.item_id for r in results[0].items] == [f"s{n}" for n in range(len(SHORT))]  # chunk order kept
    assert {r.status.value for result in results for r in result.items} == {"aligned"}
    assert results[0].skipped == 0
    for item_id, record in alone.items():
        assert words_of(grouped[item_id]) == words_of(record), item_id
        assert grouped[item_id].status == record.status
    # 5 short items in groups of 2: passes of 2, 2 and 1 items; the long item's windows went 2 at a time.
    passes = [r.getMessage() for r in caplog.records if "in one pocketsphinx pass" in r.getMessage()]
    assert passes == ["aligned 2 items in one pocketsphinx pass", "aligned 2 items in one pocketsphinx pass"]
    assert len(alone["story"].words) == len(LONG.split()) and all(w.timed for w in grouped["story"].words)


def test_a_failure_in_a_group_fails_only_its_own_item(storage, narrator, monkeypatch):
    chunks = synthesized_chunks(storage, "groupfault")
    monkeypatch.setenv(ENV_VAR, json.dumps({"step": "align", "fail_items": ["s1"]}))
    result = align_chunk(storage, Settings(alignment_batch_size=3), chunks[0])

    statuses = {r.item_id: r.status.value for r in result.items}
    assert statuses.pop("s1") == "needs_fallback"
    assert set(statuses.values()) == {"aligned"}
    failed = timings(storage, "groupfault", chunks[:1])["s1"]
    assert "InjectedFault" in failed.fallback_reason
    assert failed.model is None  # a crash, not a verdict: the next run of the step retries it


def test_a_long_item_whose_segment_audio_is_gone_fails_alone_naming_it(storage, narrator):
    chunks = synthesized_chunks(storage, "lostsegment")
    layout = BatchLayout("lostsegment")
    storage.delete(layout.segment_audio("story", 1))

    result = align_chunk(storage, Settings(), chunks[1])

    assert [(r.item_id, r.status.value) for r in result.items] == [("story", "needs_fallback")]
    record = timings(storage, "lostsegment", chunks[1:])["story"]
    assert record.fallback_reason.endswith("items/story/segments/00001.wav'")
    assert record.model is None  # not a verdict: a retry (after synthesis is redone) tries again


def test_the_batch_settings_key_whisperx_timings_but_not_an_item_by_item_aligners(storage, narrator):
    chunks = synthesized_chunks(storage, "batchkey")
    layout = BatchLayout("batchkey")
    assert align_chunk(storage, Settings(alignment_batch_size=1), chunks[0]).skipped == 0
    # pocketsphinx aligns item by item whatever the group: its records stand when only the batch size changes.
    assert align_chunk(storage, Settings(alignment_batch_size=4), chunks[0]).skipped == len(SHORT)

    # WhisperX's batched emissions are whole-item passes padded to their batch: another batch setting, another key.
    item = chunks[0].items[0]
    synthesis = SynthesisRecord.model_validate(storage.get_json(layout.synthesis(item.item_id)))
    etag = storage.etag(synthesis.audio_key)

    def key(**batching) -> str:
        return alignment_cache_key("whisperx", item, synthesis, etag, Settings(**batching))

    unbatched = key(alignment_batch_size=1)
    assert unbatched == key(alignment_batch_size=1, alignment_batch_s=60.0)  # the cap is unused when unbatched
    assert len({unbatched, key(alignment_batch_size=4), key(alignment_batch_size=8),
                key(alignment_batch_size=4, alignment_batch_s=60.0)}) == 4
    assert key(alignment_batch_size=4) == key(alignment_batch_size=4)
    assert alignment_cache_key("pocketsphinx", item, synthesis, etag, Settings(alignment_batch_size=4)) == \
        alignment_cache_key("pocketsphinx", item, synthesis, etag, Settings(alignment_batch_size=1))
