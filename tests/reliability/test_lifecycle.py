"""Manifest lifecycle against the real S3 server: incoming -> processing -> processed | incomplete | failed, claimed
by one run only, original bytes kept, moved to processed/ only once every valid line has its deliverables and the
report is written, to incomplete/ (saying what is missing) otherwise, and on from there by a run that completes it."""

from __future__ import annotations

import threading

from narration import lifecycle
from narration.deliver import write_batch_report
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, load_plan, plan_batch
from narration.render import render_chunk
from narration.settings import Settings
from narration.storage import Storage
from tests.dag_runs import jsonl

HOSTILE_BYTES = b"\xef\xbb\xbfCaf\xe9 line one.\r\nLine two\x00 with a NUL.\r\n\xff\xfe\n"


def _claim_concurrently(batches: list[str], keys: list[str]) -> dict[str, list[str]]:
    barrier = threading.Barrier(len(batches))
    claimed: dict[str, list[str]] = {}

    def run(batch_id: str) -> None:
        storage = Storage.from_settings(Settings())  # each run has its own client, as two workers would
        barrier.wait()
        claimed[batch_id] = lifecycle.claim(storage, batch_id, keys)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return claimed


def test_two_runs_never_claim_the_same_manifest(storage):
    for round_no in range(3):
        originals = {f"incoming/r{round_no}/m{n}.txt": f"Manifest {n} of round {round_no}.\n".encode()
                     for n in range(8)}
        for key, data in originals.items():
            storage.put_bytes(key, data)
        batches = [f"run{round_no}-a", f"run{round_no}-b", f"run{round_no}-c"]
        claimed = _claim_concurrently(batches, sorted(originals))

        sources = {}
        for batch_id, keys in claimed.items():
            for key in keys:
                relative = key.removeprefix(f"processing/{batch_id}/")
                assert relative not in sources, f"{relative} claimed by {sources.get(relative)} and {batch_id}"
                sources[relative] = batch_id
                assert storage.get_bytes(key) == originals[f"incoming/{relative}"]
        assert sorted(sources) == sorted(k.removeprefix("incoming/") for k in originals)
        assert list(storage.list_keys(f"incoming/r{round_no}/")) == []


def test_a_manifest_another_run_already_finished_is_skipped_cleanly(storage):
    storage.put_bytes("incoming/late.txt", b"One line.\n")
    stale_listing = lifecycle.discover(storage, None)
    assert lifecycle.claim(storage, "first", stale_listing) == ["processing/first/late.txt"]
    lifecycle.finish(storage, "first", {"processing/first/late.txt": "processed"})

    assert lifecycle.claim(storage, "second", stale_listing) == []
    assert list(storage.list_keys(lifecycle.LOCKS)) == [], "no lock may be left behind by the skipped claim"
    assert storage.get_bytes("processed/first/late.txt") == b"One line.\n"


def test_original_bytes_are_kept_and_same_named_manifests_do_not_collide(storage):
    storage.put_bytes("incoming/desk-a/news.txt", HOSTILE_BYTES)
    storage.put_bytes("incoming/desk-b/news.txt", b"The other desk's news.\n")
    claimed = lifecycle.claim(storage, "b1", lifecycle.discover(storage, None))
    assert claimed == ["processing/b1/desk-a/news.txt", "processing/b1/desk-b/news.txt"]
    moved = lifecycle.finish(storage, "b1", {"processing/b1/desk-a/news.txt": "processed"})
    # A manifest the outcomes do not name has no verdict: incomplete, never processed.
    assert moved == {"processing/b1/desk-a/news.txt": "processed/b1/desk-a/news.txt",
                     "processing/b1/desk-b/news.txt": "incomplete/b1/desk-b/news.txt"}
    assert storage.get_bytes("processed/b1/desk-a/news.txt") == HOSTILE_BYTES
    assert storage.get_bytes("incomplete/b1/desk-b/news.txt") == b"The other desk's news.\n"


def test_a_manifest_held_by_another_batch_is_left_alone_and_named_with_its_holder(storage):
    storage.put_bytes("incoming/held.txt", b"Someone else's.\n")
    assert lifecycle.claim(storage, "owner", ["incoming/held.txt"]) == ["processing/owner/held.txt"]
    storage.put_bytes("incoming/held.txt", b"Dropped again while the owner runs.\n")
    claim = lifecycle.claim_manifests(storage, "latecomer", ["incoming/held.txt"])
    assert claim.claimed == [] and claim.held == {"incoming/held.txt": "owner"}
    assert lifecycle.holder(storage, "incoming/held.txt") == "owner"
    assert storage.get_bytes("incoming/held.txt") == b"Dropped again while the owner runs.\n"


def test_a_retried_claim_completes_an_interrupted_move_but_keeps_a_new_drop(storage):
    # An earlier try copied the manifest and its lock, then died before deleting it from incoming/.
    storage.put_bytes("incoming/half.txt", b"Half moved.\n")
    storage.put_if_absent(lifecycle._lock_key("incoming/half.txt"), b"b2")
    storage.copy("incoming/half.txt", "processing/b2/half.txt")
    storage.put_bytes("incoming/fresh.txt", b"Dropped tonight.\n")
    storage.put_bytes("processing/b2/fresh.txt", b"Last night's file of the same name.\n")

    claimed = lifecycle.claim(storage, "b2", ["incoming/fresh.txt", "incoming/half.txt"])
    assert claimed == ["processing/b2/fresh.txt", "processing/b2/half.txt"]
    assert not storage.exists("incoming/half.txt"), "the interrupted move is completed"
    assert storage.get_bytes("incoming/fresh.txt") == b"Dropped tonight.\n", "a different file is left for later"


def test_manifests_move_on_only_when_every_valid_line_has_its_deliverables(storage, narrator):
    storage.put_bytes("incoming/good.jsonl", jsonl({"id": "g1", "text": "First."}, {"id": "g2", "text": "Second."}))
    storage.put_bytes("incoming/bad.jsonl", jsonl("{not json"))
    batch = "lc"
    keys = lifecycle.claim(storage, batch, lifecycle.discover(storage, None))
    plan = plan_batch(storage, Settings(), batch, keys, BatchOptions(chunk_size=1, formats=["srt"]), {"narrator"})
    good, bad = "processing/lc/good.jsonl", "processing/lc/bad.jsonl"
    # No report yet: nothing vouches for the outputs.
    assert lifecycle.manifest_outcomes(storage, batch) == {bad: "failed", good: "incomplete"}

    # The render step writes each item's result record (here: no audio was made, so they end synthesis_failed):
    # every item failed, and the report says what each one lacks.
    for chunk in plan.chunks:
        render_chunk(storage, Settings(), load_chunk(storage, chunk.key))  # planned with formats=["srt"]
    summary = write_batch_report(storage, Settings(), batch)
    assert summary["manifests"][good] == {"state": "incomplete", "valid_lines": 2, "delivered": 0,
                                          "missing": {"g1": ["audio", "srt"], "g2": ["audio", "srt"]}}
    assert summary["manifests"][bad]["state"] == "failed"
    assert lifecycle.finish(storage, batch, lifecycle.manifest_outcomes(storage, batch)) == {
        bad: "failed/lc/bad.jsonl", good: "incomplete/lc/good.jsonl"}

    # The re-run that delivers every item moves it on from incomplete/ to processed/.
    for chunk in plan.chunks:
        run_all_steps(storage, load_chunk(storage, chunk.key), formats=["srt"])
    assert lifecycle.manifest_outcomes(storage, batch)[good] == "incomplete", "the report is not rewritten yet"
    write_batch_report(storage, Settings(), batch)
    outcomes = lifecycle.manifest_outcomes(storage, batch)
    assert outcomes == {bad: "failed", good: "processed"}
    assert lifecycle.finish(storage, batch, outcomes) == {"incomplete/lc/good.jsonl": "processed/lc/good.jsonl"}
    assert sorted(storage.list_keys("processed/")) == ["processed/lc/good.jsonl"]
    assert sorted(storage.list_keys("failed/")) == ["failed/lc/bad.jsonl"]
    assert list(storage.list_keys("processing/")) == [] and list(storage.list_keys("incomplete/")) == []
    assert list(storage.list_keys(lifecycle.LOCKS)) == []
    assert load_plan(storage, batch).manifests[1].key == good


def run_all_steps(storage, chunk, formats, settings=None):
    settings = settings or Settings()
    synthesize_chunk(storage, settings, chunk)
    align_chunk(storage, settings, chunk)
    return render_chunk(storage, settings, chunk.model_copy(update={"formats": formats}))


def test_fallback_unavailable_leaves_the_manifest_incomplete_unless_the_batch_asked_for_audio_only(storage, narrator):
    lines = jsonl({"id": "t1", "text": "Timed by the primary."}, {"id": "t2", "text": "Sent to a missing fallback."})
    for batch, formats in (("subs", ["srt", "json"]), ("audio-only", [])):
        storage.put_bytes(f"incoming/{batch}.jsonl", lines)
        keys = lifecycle.claim(storage, batch, [f"incoming/{batch}.jsonl"])
        options = BatchOptions(chunk_size=2, formats=formats, force_fallback=["t2"])
        plan = plan_batch(storage, Settings(), batch, keys, options, {"narrator"})
        render = run_all_steps(storage, load_chunk(storage, plan.chunks[0].key), formats)
        assert [i.status.value for i in render.items] == ["done", "timing_failed"]
        summary = write_batch_report(storage, Settings(), batch)
        lifecycle.finish(storage, batch, lifecycle.manifest_outcomes(storage, batch))
        verdict = summary["manifests"][keys[0]]
        if formats:
            assert verdict == {"state": "incomplete", "valid_lines": 2, "delivered": 1,
                               "missing": {"t2": ["srt", "json"]}}
            assert storage.exists(f"incomplete/{batch}/{batch}.jsonl")
        else:  # audio only: the item whose timing failed still has everything the batch asked for
            assert verdict == {"state": "processed", "valid_lines": 2, "delivered": 2, "missing": {}}
            assert storage.exists(f"processed/{batch}/{batch}.jsonl")
