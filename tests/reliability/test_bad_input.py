"""The bad-input corpus through the real parser and voice library, and a batch planned from the hostile
manifests: every line is accepted or quarantined with a reason, nothing crashes, nothing else is lost."""

from __future__ import annotations

import csv
import io

import pytest

from narration.deliver import write_batch_report
from narration.layout import BatchLayout
from narration.lexicons import LexiconError, upload_lexicon
from narration.plan import BatchOptions, load_plan, load_quarantine, plan_batch
from narration.settings import Settings
from narration.voices import VoiceError, upload_voice
from tests.reliability.badinput import CASES, RESULTS_KEY, Case, mismatches, run_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_input_gets_its_clear_answer(case: Case, request):
    outcome = run_case(case)
    problems = mismatches(case, outcome)
    request.config.stash[RESULTS_KEY].append((case, outcome, problems))
    assert not problems, problems
    if case.kind == "voice":
        # The upload path refuses the same references and stores nothing for them.
        storage = request.getfixturevalue("storage")
        if case.raises:
            with pytest.raises(VoiceError, match=case.raises.replace("(", r"\(").replace(")", r"\)")):
                upload_voice(storage, case.voice_id, case.data(), case.transcript)
            assert list(storage.list_keys("voices/")) == []
        else:
            upload_voice(storage, case.voice_id, case.data(), case.transcript)
            assert len(list(storage.list_keys("voices/"))) == 2
    if case.kind == "lexicon":
        # The upload path refuses the same files with the same answer and stores nothing for them.
        storage = request.getfixturevalue("storage")
        if case.raises:
            with pytest.raises(LexiconError) as refused:
                upload_lexicon(storage, "corpus", case.data(), case.name)
            assert case.raises in str(refused.value)
            assert list(storage.list_keys("lexicons/")) == []
        else:
            upload_lexicon(storage, "corpus", case.data(), case.name)
            assert list(storage.list_keys("lexicons/")) == [f"lexicons/corpus{case.name[-4:]}"]


MANIFEST_CASES = [c for c in CASES if c.kind == "manifest" and not c.settings]


def test_a_batch_of_every_hostile_manifest_accounts_for_every_line(storage, narrator):
    """All corpus manifests in one batch: the plan, quarantine and report are written (hostile bytes and all),
    and every non-blank line of every manifest is either an item or a quarantined line with its reason."""
    keys = []
    for case in MANIFEST_CASES:
        key = f"incoming/{case.name}"
        storage.put_bytes(key, case.data())
        keys.append(key)
    plan = plan_batch(storage, Settings(), "hostile", keys, BatchOptions(chunk_size=50), {"narrator", "anna"})
    quarantine = load_quarantine(storage, "hostile")
    assert load_plan(storage, "hostile").items == plan.items

    answered = {(i.manifest, i.line) for i in plan.items} | {(e.manifest, e.line) for e in quarantine}
    for case in MANIFEST_CASES:
        outcome = run_case(case)
        if case.raises:  # a file-level problem is one quarantined row at line 0, with the reason
            rows = [e for e in quarantine if e.manifest == case.name]
            assert [(e.line, case.raises in e.reason) for e in rows] == [(0, True)], rows
        else:
            expected = {(case.name, line) for line in outcome.lines}
            assert expected <= answered, case.name
    # Ids are unique across manifests too: the second file's duplicate of an id is quarantined, not overwritten.
    assert len({i.item_id for i in plan.items}) == len(plan.items)

    summary = write_batch_report(storage, Settings(), "hostile")
    rows = list(csv.DictReader(io.StringIO(storage.get_text(BatchLayout("hostile").report_csv))))
    assert len(rows) == len(plan.items) + len(quarantine) == summary["items"]
    assert {r["status"] for r in rows} == {"quarantined", "failed"}  # nothing was synthesized in this test
    assert all(r["error"] for r in rows)
