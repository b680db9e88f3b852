"""The demo's sample data stays valid: the manifest and lexicon that `make demo` uploads, stored in the local S3
server and planned by the real parsers (no Airflow, no synthesis)."""

from __future__ import annotations

from narration.dev import demo
from narration.lexicons import parse_lexicon, upload_lexicon
from narration.longform import is_long
from narration.plan import BatchOptions, load_quarantine, plan_batch
from narration.settings import Settings

LONG_ITEM = "bulletin-feature"


def test_the_sample_lexicon_reads_as_pls_with_two_aliases_and_one_phoneme_entry():
    lexicon = parse_lexicon(demo.SAMPLE_LEXICON_NAME, demo.SAMPLE_LEXICON.read_bytes(), demo.SAMPLE_LEXICON.name)
    entries = list(lexicon.entries.values())
    assert (lexicon.format, sum(e.alias is not None for e in entries), sum(e.phonemes is not None for e in entries)
            ) == ("pls", 2, 1)


def test_the_sample_manifest_plans_one_long_item_and_uses_every_lexicon_entry(storage):
    settings = Settings()
    lexicon = upload_lexicon(storage, demo.SAMPLE_LEXICON_NAME, demo.SAMPLE_LEXICON.read_bytes(),
                             demo.SAMPLE_LEXICON.name)
    key = f"incoming/{demo.SAMPLE_MANIFEST.name}"
    storage.put_bytes(key, demo.SAMPLE_MANIFEST.read_bytes())
    plan = plan_batch(storage, settings, "sample", [key],
                      BatchOptions(chunk_size=4, lexicons=[lexicon.name]), {demo.SAMPLE_VOICE})

    long_items = [item for item in plan.items if is_long(item, settings)]
    assert [item.item_id for item in long_items] == [LONG_ITEM]
    feature = long_items[0]
    assert [c.title for c in feature.chapters] == ["The harbour", "Switching on", "After dark"]
    assert len(feature.paragraphs) + 1 == 6
    assert settings.longform_min_chars < len(feature.text) <= settings.max_text_chars
    assert [c.item_ids for c in plan.chunks if c.longform_chars] == [[LONG_ITEM]]

    # Every entry of the lexicon matches a word of the manifest, so the demo shows each one applied.
    matched = {(p.grapheme, p.alias, p.phonemes) for item in plan.items for p in item.pronunciations}
    assert {p.lexicon for item in plan.items for p in item.pronunciations} == {lexicon.name}
    assert len(matched) == lexicon.entries == 3
    assert ("Siobhan", None, "ʃɪˈvɔːn") in matched
    assert not [item.item_id for item in plan.items if item.lexicons_not_applied]  # en-GB serves the en lines

    rejected = load_quarantine(storage, "sample")
    assert [(e.line, e.field) for e in rejected] == [(13, "voice")]
    assert len(plan.items) == 14
