"""Long-form items: paragraphs and chapters from manifests, segmentation per backend, segmented synthesis joined
into one master with pauses, window-by-window alignment, resume after a kill, chapters in words.json and the
WebVTT chapters track, and their own chunks and time budgets. Real moto S3, espeak-ng and pocketsphinx."""

from __future__ import annotations

import json
import signal
import subprocess
from datetime import timedelta

import pytest

from narration.audio import WAV_HEADER_BYTES, read_wav_header
from narration.contract import chunk_time_budget
from narration.dev.faults import ENV_VAR
from narration.layout import BatchLayout
from narration.longform import is_long, segment_tokens
from narration.manifests import ValidationContext, parse_manifest
from narration.pipeline import _tokens, align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, load_quarantine, plan_batch
from narration.render import render_chunk
from narration.schema import ChunkResult, ItemSpec, SynthesisRecord, TimingRecord
from narration.settings import Settings
from narration.synth.espeak import EspeakSynthesizer
from narration.synth.f5tts import F5TTSSynthesizer
from tests.dag_runs import jsonl
from tests.reliability.test_faults import run_worker

PARAGRAPHS = [
    "The harbour was quiet that morning. Gulls circled above the boats.",
    "By noon the wind had turned. The fishermen pulled their nets in early.",
    "In the evening the lamps were lit along the pier. Nobody spoke of the storm.",
]
TEXT = "\n\n".join(PARAGRAPHS)
FORMATS = ["srt", "vtt", "json", "chapters"]


def plan_lines(storage, batch_id: str, *lines, name: str | None = None, data: bytes | None = None,
               settings: Settings | None = None, chunk_size: int = 16):
    name = name or f"{batch_id}.jsonl"
    storage.put_bytes(f"incoming/{name}", data if data is not None else jsonl(*lines))
    return plan_batch(storage, settings or Settings(), batch_id, [f"incoming/{name}"],
                      BatchOptions(chunk_size=chunk_size), {"narrator"})


def long_item_chunk(storage, batch_id: str, **fields):
    line = {"id": "story", "text": TEXT, **fields}
    plan = plan_lines(storage, batch_id, line)
    assert len(plan.chunks) == 1 and plan.chunks[0].item_ids == ["story"]
    return plan.chunks[0].key, load_chunk(storage, plan.chunks[0].key)


def test_segments_follow_sentences_and_paragraphs_with_longer_pauses_at_breaks():
    settings = Settings()
    item = ItemSpec(item_id="x", text=" ".join(PARAGRAPHS), voice="narrator", manifest="m.jsonl", line=1,
                    paragraphs=[11, 24], chapters=[{"title": "Evening", "paragraph": 3}])
    tokens = _tokens(item)
    espeak = segment_tokens(tokens, item, EspeakSynthesizer, settings)
    assert [" ".join(t.original for t in s.tokens) for s in espeak] == \
        [sentence for p in PARAGRAPHS for sentence in (p.split(". ")[0] + ".", p.split(". ")[1])]
    assert [s.paragraph for s in espeak] == [1, 1, 2, 2, 3, 3]
    assert [s.chapter for s in espeak] == [None, None, None, None, 0, 0]
    assert [s.pause_after_ms for s in espeak] == [settings.pause_sentence_ms, settings.pause_paragraph_ms,
                                                  settings.pause_sentence_ms, settings.pause_chapter_ms,
                                                  settings.pause_sentence_ms, 0]
    assert settings.pause_sentence_ms < settings.pause_paragraph_ms < settings.pause_chapter_ms
    # F5-TTS takes whole sentences up to its context (about 150 characters): one segment a paragraph here.
    f5 = segment_tokens(tokens, item, F5TTSSynthesizer, settings)
    assert [s.paragraph for s in f5] == [1, 2, 3]
    assert [(s.first_token, s.end_token) for s in f5] == [(0, 11), (11, 24), (24, len(tokens))]


def test_a_multi_paragraph_item_is_one_programme_with_a_continuous_monotonic_word_track(storage, narrator):
    _, chunk = long_item_chunk(storage, "programme")
    settings = Settings()
    synth = synthesize_chunk(storage, settings, chunk)
    assert [i.status.value for i in synth.items] == ["synthesized"]
    layout = BatchLayout("programme")
    record = SynthesisRecord.model_validate(storage.get_json(layout.synthesis("story")))
    assert len(record.segments) == 6 and record.params["segments_reused"] == 0
    # One master, made of the segments and the pauses between them.
    assert record.segments[-1].end_ms == round(record.audio_seconds * 1000)
    for before, after in zip(record.segments, record.segments[1:]):
        assert after.start_frame == before.start_frame + before.frames + round(before.pause_after_ms * 22.05)
        assert after.first_token == before.end_token
    assert len({s.seed for s in record.segments}) == 6  # derived per segment, recorded

    aligned = align_chunk(storage, settings, chunk)
    assert [i.status.value for i in aligned.items] == ["aligned"]
    timing = TimingRecord.model_validate(storage.get_json(layout.timing("story", "pocketsphinx")))
    words = timing.words
    assert [w.index for w in words] == list(range(len(record.tokens)))
    assert all(w.timed for w in words)
    for before, after in zip(words, words[1:]):
        assert before.start_ms <= before.end_ms <= after.start_ms, (before, after)
    # Each word lies inside its own segment's window of the master.
    for span in record.segments:
        for w in words[span.first_token:span.end_token]:
            assert span.start_ms <= w.start_ms and w.end_ms <= span.end_ms

    gaps = {span.index: words[span.end_token].start_ms - words[span.end_token - 1].end_ms
            for span in record.segments[:-1]}
    sentence_gaps = [gaps[s.index] for s in record.segments[:-1] if s.pause_after_ms == settings.pause_sentence_ms]
    paragraph_gaps = [gaps[s.index] for s in record.segments[:-1] if s.pause_after_ms == settings.pause_paragraph_ms]
    assert min(paragraph_gaps) > max(sentence_gaps), gaps

    # Against espeak's exact onsets (shifted into master time), the error does not grow along the programme.
    reference = {w.index: w.start_ms for w in record.reference_words}
    errors = [abs(w.start_ms - reference[w.index]) for w in words]
    first, last = errors[: len(errors) // 3], errors[-(len(errors) // 3):]
    assert max(errors) < 200 and sum(last) / len(last) <= sum(first) / len(first) + 30, errors


def test_short_items_keep_their_one_piece_synthesis(storage, narrator):
    plan = plan_lines(storage, "short", {"id": "s1", "text": "One short line. And another sentence."})
    chunk = load_chunk(storage, plan.chunks[0].key)
    assert not is_long(chunk.items[0], Settings())
    synthesize_chunk(storage, Settings(), chunk)
    record = SynthesisRecord.model_validate(storage.get_json(BatchLayout("short").synthesis("s1")))
    assert record.segments == [] and "segments" not in record.params
    assert not any(key.split("/")[-2] == "segments" for key in storage.list_keys(BatchLayout("short").root))


def test_a_worker_killed_mid_item_resumes_at_the_next_unfinished_segment(storage, narrator):
    chunk_key, _ = long_item_chunk(storage, "resume")
    layout = BatchLayout("resume")
    killed = run_worker("synthesize", "--chunk", chunk_key, faults=[{"step": "synthesize", "kill_after_segments": 2}])
    assert killed.returncode == -signal.SIGKILL and killed.stdout == "", killed.stderr[-2000:]
    left = sorted(k.rsplit("/", 1)[1] for k in storage.list_keys(layout.segments_prefix("story")))
    assert left == ["00000.json", "00000.wav", "00001.json", "00001.wav"]
    assert not storage.exists(layout.synthesis("story"))
    etags = {k: storage.etag(k) for k in storage.list_keys(layout.segments_prefix("story"))}

    retry = run_worker("synthesize", "--chunk", chunk_key)
    assert retry.returncode == 0, retry.stderr[-2000:]
    result = ChunkResult.model_validate_json(retry.stdout.strip().splitlines()[-1])
    assert [i.status.value for i in result.items] == ["synthesized"]
    record = SynthesisRecord.model_validate(storage.get_json(layout.synthesis("story")))
    assert [s.reused for s in record.segments] == [True, True, False, False, False, False]
    assert record.params["segments_reused"] == 2
    assert all(storage.etag(k) == etag for k, etag in etags.items()), "the finished segments were not rewritten"
    # The master is made of the segments as stored, reused or new, and the pauses between them.
    master = storage.get_bytes(layout.audio("story"))
    data = read_wav_header(master[:WAV_HEADER_BYTES]).data_offset
    for span in record.segments:
        segment = storage.get_bytes(span.audio_key)
        pcm = segment[read_wav_header(segment[:WAV_HEADER_BYTES]).data_offset:]
        assert master[data + 2 * span.start_frame:data + 2 * (span.start_frame + span.frames)] == pcm
        pause = master[data + 2 * (span.start_frame + span.frames):][:2 * round(span.pause_after_ms * 22.05)]
        assert pause == bytes(len(pause))


def ffmpeg_srt(path) -> str:
    """The cues ffmpeg's WebVTT reader finds in ``path``, written back as SRT."""
    done = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "srt", "-"], capture_output=True,
                          text=True, check=True)
    return done.stdout


def test_chapters_reach_words_json_and_the_webvtt_chapters_track(storage, narrator, tmp_path):
    chapters = [{"title": "Morning", "paragraph": 1}, {"title": "Noon & after", "paragraph": 2},
                {"title": "Evening", "paragraph": 3}]
    _, chunk = long_item_chunk(storage, "chaptered", chapters=chapters)
    settings = Settings()
    synthesize_chunk(storage, settings, chunk)
    align_chunk(storage, settings, chunk)
    rendered = render_chunk(storage, settings, chunk.model_copy(update={"formats": FORMATS}))
    assert [i.status.value for i in rendered.items] == ["done"]
    layout = BatchLayout("chaptered")
    record = SynthesisRecord.model_validate(storage.get_json(layout.synthesis("story")))
    words = json.loads(storage.get_text(layout.subtitle("story", "json")))
    marks = words["chapters"]
    assert [m["title"] for m in marks] == ["Morning", "Noon & after", "Evening"]
    assert [m["first_word"] for m in marks] == [0, 11, 24]
    assert marks[0]["start_ms"] == 0 and marks[-1]["end_ms"] == round(record.audio_seconds * 1000)
    for before, after in zip(marks, marks[1:]):
        assert before["end_ms"] == after["start_ms"]
        first = words["words"][after["first_word"]]
        assert after["start_ms"] <= first["start_ms"]  # the chapter starts before its first word is heard
        previous_word = words["words"][after["first_word"] - 1]
        assert previous_word["end_ms"] <= after["start_ms"]  # and after the previous chapter's last word

    path = tmp_path / "chapters.vtt"
    path.write_text(storage.get_text(layout.subtitle("story", "chapters")))
    cues = [block.splitlines() for block in ffmpeg_srt(path).strip().split("\n\n")]
    assert [cue[2] for cue in cues] == ["Morning", "Noon & after", "Evening"]
    def ms(stamp: str) -> int:
        h, m, rest = stamp.split(":")
        s, milli = rest.split(",")
        return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(milli)
    assert [ms(cue[1].split(" --> ")[0]) for cue in cues] == [m["start_ms"] for m in marks]


def test_a_short_item_has_one_chapter_over_the_whole_item(storage, narrator, tmp_path):
    plan = plan_lines(storage, "onechapter", {"id": "s1", "text": "A single short line to narrate."})
    chunk = load_chunk(storage, plan.chunks[0].key)
    for step in (synthesize_chunk, align_chunk):
        step(storage, Settings(), chunk)
    render_chunk(storage, Settings(), chunk.model_copy(update={"formats": FORMATS}))
    layout = BatchLayout("onechapter")
    marks = json.loads(storage.get_text(layout.subtitle("s1", "json")))["chapters"]
    audio_ms = round(storage.get_json(layout.synthesis("s1"))["audio_seconds"] * 1000)
    assert marks == [{"title": "s1", "start_ms": 0, "end_ms": audio_ms, "first_word": 0}]
    path = tmp_path / "chapters.vtt"
    path.write_text(storage.get_text(layout.subtitle("s1", "chapters")))
    assert ffmpeg_srt(path).strip().splitlines()[2] == "s1"


def test_a_longform_txt_manifest_is_one_item_with_headings_as_chapters(storage, narrator):
    text = ("\ufeff\n# The harbour\n" + PARAGRAPHS[0] + "\n\n" + PARAGRAPHS[1] + "\n"
            "# Night\n\n" + PARAGRAPHS[2] + "\n").encode()
    plan = plan_lines(storage, "book", name="tales/harbour.longform.txt", data=text)
    assert plan.quarantined == 0 and len(plan.items) == 1
    item = plan.items[0]
    assert item.item_id == "tales-harbour-00002" and item.line == 2
    assert [(c.title, c.paragraph) for c in item.chapters] == [("The harbour", 1), ("Night", 4)]
    assert item.text == " ".join(["The harbour", *PARAGRAPHS[:2], "Night", PARAGRAPHS[2]])
    words = item.text.split()
    assert [words[i] for i in item.paragraphs] == ["The", "By", "Night", "In"]
    segments = segment_tokens(_tokens(item), item, EspeakSynthesizer, Settings())
    assert [s.chapter for s in segments] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert segments[4].pause_after_ms == Settings().pause_chapter_ms


def test_bad_chapter_fields_are_quarantined_with_file_line_and_field(storage, narrator):
    good = {"id": "ok", "text": TEXT, "chapters": [{"title": "One", "paragraph": 1}]}
    lines = [
        good,
        {"id": "b1", "text": TEXT, "chapters": [{"title": "One", "paragraph": 4}]},
        {"id": "b2", "text": TEXT, "chapters": [{"title": "One", "paragraph": 2}, {"title": "Two", "paragraph": 1}]},
        {"id": "b3", "text": TEXT, "chapters": [{"title": "", "paragraph": 1}]},
        {"id": "b4", "text": TEXT, "chapters": [{"title": "One", "paragraph": True}]},
        {"id": "b5", "text": TEXT, "chapters": {"title": "One"}},
        {"id": "b6", "text": "# A heading\n\n" + TEXT, "chapters": [{"title": "One", "paragraph": 1}]},
        {"id": "b7", "text": "Intro.\n#  \n" + TEXT},
        {"id": "b8", "text": TEXT, "chapters": [{"title": "One", "paragraph": 1, "page": 3}]},
    ]
    plan = plan_lines(storage, "badchapters", *lines)
    assert [i.item_id for i in plan.items] == ["ok"]
    found = {(e.manifest, e.line, e.field): e.reason for e in load_quarantine(storage, "badchapters")}
    name = "badchapters.jsonl"
    assert set(found) == {(name, 2, "chapters.0.paragraph"), (name, 3, "chapters.1.paragraph"),
                          (name, 4, "chapters.0.title"), (name, 5, "chapters.0.paragraph"), (name, 6, "chapters"),
                          (name, 7, "chapters"), (name, 8, "text"), (name, 9, "chapters.0.page")}
    assert "the text has 3 paragraph(s)" in found[(name, 2, "chapters.0.paragraph")]
    assert "not both" in found[(name, 7, "chapters")]
    assert "has no title (line 2 of the text)" in found[(name, 8, "text")]


def test_a_heading_without_title_in_a_longform_txt_names_its_line():
    ctx = ValidationContext(settings=Settings(), voices={"narrator"})
    parsed = parse_manifest("essay.longform.txt", b"First paragraph.\n\n#\n# \nSecond.\n", ctx)
    assert parsed.items == [] and [(e.line, e.field) for e in parsed.errors] == [(4, "text")]


def test_long_items_get_their_own_chunks_and_a_budget_that_grows_with_their_text(storage, narrator):
    settings = Settings()
    long_text = " ".join(PARAGRAPHS * 40)  # about 8,400 characters in one paragraph
    assert settings.max_text_chars == 100_000 and len(long_text) > settings.longform_min_chars
    lines = [{"id": f"s{n}", "text": "A short line."} for n in range(3)]
    lines.insert(1, {"id": "long", "text": long_text})
    plan = plan_lines(storage, "chunks", *lines, chunk_size=16)
    assert [c.item_ids for c in plan.chunks] == [["s0", "s1", "s2"], ["long"]]
    short, long = (c.model_dump() for c in plan.chunks)
    assert (short["longform_chars"], long["longform_chars"]) == (0, len(long_text))
    assert chunk_time_budget(short) == timedelta(seconds=settings.worker_timeout_base_s
                                                 + 3 * settings.worker_timeout_per_item_s)
    assert chunk_time_budget(long) == timedelta(seconds=settings.worker_timeout_base_s
                                                + settings.worker_timeout_per_item_s
                                                + settings.worker_timeout_per_kchar_s * len(long_text) / 1000)
    assert chunk_time_budget(long) > chunk_time_budget(short)


def test_the_text_limit_is_configurable_and_named(storage, narrator, monkeypatch):
    monkeypatch.setenv("NARRATION_MAX_TEXT_CHARS", "100")
    plan = plan_lines(storage, "limit", {"id": "ok", "text": "Short."}, {"id": "big", "text": TEXT},
                      settings=Settings())
    errors = load_quarantine(storage, "limit")
    assert [i.item_id for i in plan.items] == ["ok"]
    assert [(e.line, e.field) for e in errors] == [(2, "text")] and "over the limit of 100" in errors[0].reason


@pytest.mark.parametrize("text", ["# Not a heading on one line", "Tabs\tand\nsingle line breaks stay one paragraph."])
def test_one_paragraph_texts_stay_short_items(storage, narrator, text):
    plan = plan_lines(storage, "plain", {"id": "p", "text": text})
    item = plan.items[0]
    assert item.paragraphs == [] and item.chapters == [] and not is_long(item, Settings())


def test_the_chaos_rule_for_segments_is_parsed():
    from narration.dev.faults import active_rules

    assert active_rules({ENV_VAR: '{"step": "synthesize", "kill_after_segments": 3}'})[0].kill_after_segments == 3


def test_true_peak_in_blocks_equals_oversampling_the_whole_master():
    import numpy as np
    from scipy.signal import resample_poly

    from narration.loudness import PEAK_BLOCK_SAMPLES, oversampled_peaks, true_peak_dbtp

    audio = (np.random.default_rng(7).standard_normal(2 * PEAK_BLOCK_SAMPLES + 12_345) * 0.3).astype(np.float32)
    whole = np.abs(resample_poly(audio.astype(np.float64), 4, 1)).reshape(len(audio), 4).max(axis=1)
    assert np.array_equal(oversampled_peaks(audio), whole)
    assert true_peak_dbtp(audio) == pytest.approx(20 * np.log10(whole.max()), abs=1e-12)


def test_a_csv_line_carries_paragraphs_in_its_text_and_chapters_as_a_json_cell():
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "text", "chapters"])
    writer.writerow(["story", TEXT, json.dumps([{"title": "Evening", "paragraph": 3}])])
    writer.writerow(["bad", TEXT, "[{\"title\": \"Evening\"}"])
    parsed = parse_manifest("desk.csv", out.getvalue().encode(), ValidationContext(settings=Settings(),
                                                                                 voices={"narrator"}))
    assert [(i.item_id, i.paragraphs, [c.title for c in i.chapters]) for i in parsed.items] == \
        [("story", [11, 24], ["Evening"])]
    assert [(e.line, e.field) for e in parsed.errors] == [(7, "chapters")]  # the story row spans lines 2-6
    assert "must be a JSON list" in parsed.errors[0].reason


def test_a_dag_run_narrates_a_long_item_in_its_own_chunk_beside_short_ones(storage, narrator, airflow_db,
                                                                           monkeypatch):
    from tests.dag_runs import only_batch_id, results, run_dag, states, task_instances

    for name in ("NARRATION_GOOGLE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    storage.put_bytes("incoming/mixed.jsonl", jsonl(
        {"id": "a", "text": "A short line first."},
        {"id": "story", "text": TEXT, "chapters": [{"title": "Morning", "paragraph": 1},
                                                  {"title": "Evening", "paragraph": 3}]},
        {"id": "b", "text": "And a short line after it."}))
    dag_run = run_dag({"chunk_size": 16})
    assert str(dag_run.state) in ("success", "DagRunState.SUCCESS")
    batch_id = only_batch_id(storage)
    rows = results(storage, batch_id)
    assert {item_id: row["status"] for item_id, row in rows.items()} == {"a": "done", "story": "done", "b": "done"}
    tis = task_instances(dag_run)
    assert [ti.rendered_map_index for ti in tis["synthesize"]] == ["c0000 a..b (2)", "c0001 story (1)"]
    assert states(tis["synthesize"]) == ["success", "success"]
    plan = storage.get_json(BatchLayout(batch_id).plan)
    assert [c["longform_chars"] for c in plan["chunks"]] == [0, len(" ".join(PARAGRAPHS))]
    words = storage.get_json(rows["story"]["json_key"])
    assert [c["title"] for c in words["chapters"]] == ["Morning", "Evening"]
    assert rows["story"]["chapters_key"].endswith("/story/chapters.vtt")


def test_force_rerender_synthesises_every_segment_again(storage, narrator):
    _, chunk = long_item_chunk(storage, "forced")
    synthesize_chunk(storage, Settings(), chunk)
    synthesize_chunk(storage, Settings(), chunk.model_copy(update={"params": {"force": True}}))
    record = SynthesisRecord.model_validate(storage.get_json(BatchLayout("forced").synthesis("story")))
    assert [s.reused for s in record.segments] == [False] * 6


def test_the_google_fallback_times_a_long_item_window_by_window(storage, narrator, monkeypatch):
    from narration.dev.speech_server import LocalSpeechServer

    _, chunk = long_item_chunk(storage, "googled")
    settings = Settings()
    synthesize_chunk(storage, settings, chunk)
    routed = chunk.model_copy(update={"timing_method": "google"})
    assert [i.status.value for i in align_chunk(storage, settings, routed).items] == ["needs_fallback"]
    with LocalSpeechServer() as server:
        monkeypatch.setenv("NARRATION_GOOGLE_ENDPOINT", server.address)
        monkeypatch.setenv("NARRATION_GOOGLE_INSECURE", "true")
        fallback = align_chunk(storage, Settings(), routed.model_copy(update={"fallback": True}))
        assert server.calls == 6, "one recognition per segment window"
    assert [i.status.value for i in fallback.items] == ["aligned"]
    layout = BatchLayout("googled")
    record = SynthesisRecord.model_validate(storage.get_json(layout.synthesis("story")))
    words = TimingRecord.model_validate(storage.get_json(layout.timing("story", "google"))).words
    timed = [w for w in words if w.timed]
    assert len(timed) >= 0.8 * len(words) and {w.source for w in words} == {"google"}
    assert [w.start_ms for w in timed] == sorted(w.start_ms for w in timed)
    for span in record.segments:
        for w in words[span.first_token:span.end_token]:
            assert not w.timed or span.start_ms <= w.start_ms <= w.end_ms <= span.end_ms + 100  # 100 ms grid


def test_a_run_on_sentence_is_cut_at_clauses_then_words_so_no_segment_is_unbounded():
    settings = Settings(longform_min_chars=120)
    clause = "the tide came in over the flats and the birds rose from the water"
    text = ", ".join([clause] * 6) + " " + " ".join(["onwards"] * 40)  # one sentence, no full stop anywhere
    item = ItemSpec(item_id="x", text=text, voice="narrator", manifest="m.jsonl", line=1)
    tokens = _tokens(item)
    segments = segment_tokens(tokens, item, EspeakSynthesizer, settings)
    from narration.normalize import spoken_text

    assert [t for s in segments for t in s.tokens] == tokens
    assert all(len(spoken_text(s.tokens)) <= 120 for s in segments)
    assert all(s.tokens[-1].original.endswith(",") for s in segments[:3])  # clause ends first
    assert len(segments) > 4


def test_subtitle_cues_never_run_across_a_paragraph_or_a_chapter_heading(storage, narrator):
    text = ("# Morning\n\nThe harbour was quiet that morning. Gulls circled above the boats.\n\n"
            "By noon the wind had turned.\n\n# Evening\n\nIn the evening the lamps were lit along the pier.")
    plan = plan_lines(storage, "cuebreaks", {"id": "story", "text": text})
    chunk = load_chunk(storage, plan.chunks[0].key)
    settings = Settings()
    synthesize_chunk(storage, settings, chunk)
    align_chunk(storage, settings, chunk)
    assert [i.status.value for i in render_chunk(storage, settings, chunk.model_copy(
        update={"formats": ["json"]})).items] == ["done"]
    layout = BatchLayout("cuebreaks")
    document = json.loads(storage.get_text(layout.subtitle("story", "json")))
    record = SynthesisRecord.model_validate(storage.get_json(layout.synthesis("story")))

    paragraph_of = {token: span.paragraph for span in record.segments
                    for token in range(span.first_token, span.end_token)}
    assert sorted(set(paragraph_of.values())) == [1, 2, 3, 4, 5]  # the headings are paragraphs of their own
    cue_paragraphs = [{paragraph_of[index] for index in cue["word_indexes"]} for cue in document["cues"]]
    assert all(len(paragraphs) == 1 for paragraphs in cue_paragraphs), cue_paragraphs
    headings = [" ".join(document["words"][i]["text"] for i in cue["word_indexes"]) for cue in document["cues"]
                if paragraph_of[cue["word_indexes"][0]] in (1, 4)]
    assert headings == ["Morning", "Evening"]


def test_a_long_items_quality_checks_judge_a_segment_with_enough_speech(storage, narrator, monkeypatch):
    monkeypatch.setenv("NARRATION_QUALITY_LANGUAGE_ID", "true")
    text = ("# Morning\n\nThe harbour was quiet that morning, and the gulls circled slowly above the fishing boats "
            "that waited for the tide.\n\nBy noon the wind had turned.")
    plan = plan_lines(storage, "judged", {"id": "story", "text": text})
    synthesize_chunk(storage, Settings(), load_chunk(storage, plan.chunks[0].key))
    record = SynthesisRecord.model_validate(storage.get_json(BatchLayout("judged").synthesis("story")))

    assert len(record.segments) == 3 and record.segments[0].end_ms - record.segments[0].start_ms < 3000
    assert "quality checks judged segment 2 of 3 (the first synthesised of at least 3 s, else the longest)" in \
        record.quality_notes
    assert record.detected_language == "en" and record.language_probability > 0.8
