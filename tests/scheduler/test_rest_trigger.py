"""A real scheduler run: Airflow's api-server, scheduler and dag-processor (SQLite, LocalExecutor, through
tests/airflow_stack.py) run narration_batch triggered through REST API v2 (short items, a long item with chapters,
a batch lexicon), and headless Chromium saves the run's grid view with its labelled mapped instances.

Screenshots and component logs go to $NARRATION_ARTIFACTS (default ./artifacts/scheduler/).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from narration.layout import SUBTITLE_FORMATS, BatchLayout
from tests.airflow_stack import DAG_ID, AirflowStack, voiced_bucket
from tests.airflow_stack import artifacts_dir as stage_artifacts
from tests.browser import CHROMIUM_ARGS, playwright_and_chromium
from tests.dag_runs import jsonl

pytestmark = pytest.mark.scheduler

RUN_TIMEOUT_S = float(os.environ.get("NARRATION_SCHEDULER_TIMEOUT_S", "420"))
# A long item (three paragraphs, two chapters) narrated as one programme, under a batch lexicon.
STORY = "\n\n".join(["The harbour was quiet that morning. Mr. Nguyen counted the boats.",
                      "By noon the wind had turned. The fishermen pulled their nets in early.",
                      "Nobody spoke of the storm. They mended the sails and waited."])
LINES = [
    {"id": "s1", "text": "The council met on Tuesday."},
    {"id": "s2", "text": "Doors open at 10:30."},
    "{not json",
    {"id": "s3", "text": "Rain is expected tonight."},
    {"id": "story", "text": STORY, "chapters": [{"title": "Morning", "paragraph": 1},
                                                {"title": "The storm", "paragraph": 3}]},
]
HARBOUR_LEXICON = ('<?xml version="1.0" encoding="UTF-8"?>\n<lexicon version="1.0" '
                   'xmlns="http://www.w3.org/2005/01/pronunciation-lexicon" alphabet="ipa" xml:lang="en-US">\n'
                   '  <lexeme><grapheme>Nguyen</grapheme><alias>win</alias></lexeme>\n'
                   '</lexicon>\n')


def artifacts_dir() -> Path:
    return stage_artifacts("scheduler")


@pytest.fixture(scope="module")
def seeded_bucket(s3_server, narrator_wav) -> str:
    from narration.lexicons import upload_lexicon
    from narration.settings import Settings
    from narration.storage import Storage

    bucket = voiced_bucket("sched", narrator_wav, {"incoming/scheduler-news.jsonl": jsonl(*LINES)})
    upload_lexicon(Storage.from_settings(Settings(bucket=bucket)), "harbour", HARBOUR_LEXICON.encode(), "harbour.pls")
    return bucket


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server, seeded_bucket):
    log_dir = artifacts_dir() / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)  # this run's logs only
    log_dir.mkdir()
    stack = AirflowStack(tmp_path_factory.mktemp("airflow-home"), s3_server.env(seeded_bucket), log_dir)
    with stack:
        yield stack


def test_rest_triggered_run_succeeds_writes_outputs_and_shows_labelled_mapped_instances(browser, stack, seeded_bucket):
    started = time.monotonic()
    stack.token()
    assert requests.get(f"{stack.base_url}/api/v2/dags", timeout=30).status_code == 401  # the API wants the token

    dag = stack.wait_for_dag()
    parsed_s = time.monotonic() - started
    assert dag["is_paused"] is False and "narration" in {tag["name"] for tag in dag["tags"]}

    conf = {"chunk_size": 2, "formats": ["srt", "vtt", "json", "chapters"], "manifest": "incoming/scheduler-news.jsonl",
            "lexicons": ["harbour"]}
    run = stack.trigger(conf)
    run_id = run["dag_run_id"]
    assert run["conf"] == conf

    state = stack.wait_for_run(run_id, RUN_TIMEOUT_S)
    run_s = time.monotonic() - started - parsed_s
    tis = stack.task_instances(run_id)
    summary = sorted((ti["task_id"], ti["map_index"], ti["state"]) for ti in tis)
    assert state == "success", summary

    labels = sorted(ti["rendered_map_index"] for ti in tis if ti["task_id"] == "synthesize")
    assert labels == ["c0000 s1..s2 (2)", "c0001 s3 (1)", "c0002 story (1)"]  # the long item has its own chunk
    assert {ti["state"] for ti in tis if ti["task_id"] in ("synthesize", "align", "render_subtitles")} == {"success"}

    # The outputs, in the bucket the connection points at.
    from narration.settings import Settings
    from narration.storage import Storage

    s3 = Storage.from_settings(Settings(bucket=seeded_bucket))
    (batch_id,) = {key.split("/")[1] for key in s3.list_keys("batches/")}
    layout = BatchLayout(batch_id)
    for item_id in ("s1", "s2", "s3", "story"):
        result = s3.get_json(layout.result(item_id))
        assert result["status"] == "done" and result["synthesizer"] == "espeak", result
        for kind in ("audio", "srt", "vtt", "json"):
            assert s3.exists(result[f"{kind}_key"]), (item_id, kind)
    assert s3.exists(layout.report_csv) and s3.get_json(layout.summary)["by_status"] == {"done": 4, "quarantined": 1}

    # The programme: one master of three segments, two chapters, one monotonic word track; the lexicon's alias
    # was spoken and the subtitles keep the written name.
    synthesis = s3.get_json(layout.synthesis("story"))
    assert [span["paragraph"] for span in synthesis["segments"]] == [1, 1, 2, 2, 3, 3]
    assert synthesis["params"]["lexicon_entries"] == ["Nguyen: alias 'win' (harbour)"]
    words = s3.get_json(result["json_key"])
    assert [c["title"] for c in words["chapters"]] == ["Morning", "The storm"]
    starts = [w["start_ms"] for w in words["words"]]
    assert None not in starts and starts == sorted(starts)
    assert [w["spoken"] for w in words["words"] if w["text"] == "Nguyen"] == ["win"]
    assert "Mr. Nguyen counted the boats." in s3.get_text(result["srt_key"])
    assert "The storm" in s3.get_text(layout.subtitle("story", "chapters"))
    assert [k for k in s3.list_keys("processed/") if k.endswith("scheduler-news.jsonl")]

    shots = screenshot_grid(stack, run_id, *browser)
    for path in shots.values():
        assert_real_screenshot(path)
    print(f"\nstack up {stack.started_s:.0f} s; DAG parsed after {parsed_s:.0f} s; run {run_id}: {state} "
          f"{run_s:.0f} s after the trigger; screenshots: {', '.join(str(p) for p in shots.values())}")


@pytest.fixture(scope="module")
def browser():
    """(playwright's sync API, Chromium path), checked before the stack starts; skipped where absent, but a failure
    under CI, which must have them."""
    return playwright_and_chromium("the screenshot")


@contextlib.contextmanager
def logged_in_page(stack: AirflowStack, playwright_api, chromium: str, path: str):
    """A headless Chromium page logged in through the UI's form and opened at ``path``."""
    profile = artifacts_dir() / "chromium-profile"
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            page.goto(f"{stack.base_url}/auth/login?next={urllib.parse.quote(path)}")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", stack.password())
            page.click("button[type=submit]")
            page.wait_for_url(f"{stack.base_url}{path}*", timeout=60_000)
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def screenshot_grid(stack: AirflowStack, run_id: str, playwright_api, chromium: str) -> dict[str, Path]:
    """Log in through the UI's form, then save the run's grid view and the mapped-instance list of synthesize."""
    out = artifacts_dir()
    run_path = f"/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id)}"
    shots = {"grid": out / "grid-run.png", "mapped": out / "grid-mapped-synthesize.png"}
    with logged_in_page(stack, playwright_api, chromium, run_path) as page:
        page.get_by_text("render_subtitles").first.wait_for(timeout=60_000)  # the grid's task rows are drawn
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(shots["grid"]))

        page.goto(f"{stack.base_url}{run_path}/tasks/synthesize/mapped")
        page.get_by_text("c0000 s1..s2 (2)").first.wait_for(timeout=60_000)
        page.get_by_text("c0001 s3 (1)").first.wait_for(timeout=60_000)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(shots["mapped"]))
    return shots


def assert_real_screenshot(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 20_000, path
    with Image.open(path) as image:
        assert image.size == (1600, 1000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, f"{path} looks blank ({len(colours)} colours)"


FORM_LINES = [{"id": "f1", "text": "Triggered from the form."}, {"id": "f2", "text": "With every default."}]
FORM_NAMES_LINE = {"id": "f3", "text": "Mr. Nguyen chose the lexicon in the form."}


def test_trigger_form_submits_with_its_defaults_refuses_a_bad_chunk_size_and_takes_a_lexicon(
        browser, stack, seeded_bucket):
    """The UI as an operator meets it: the Trigger form, submitted untouched, starts a run that narrates what is
    under incoming/; a chunk size outside 1..500 cannot be entered, and the API refuses one in the conf; a lexicon
    typed into the form's lexicons field reaches the run and is applied."""
    from narration.settings import Settings
    from narration.storage import Storage

    s3 = Storage.from_settings(Settings(bucket=seeded_bucket))
    s3.put_bytes("incoming/form-news.jsonl", jsonl(*FORM_LINES))
    runs_before = {r["dag_run_id"] for r in stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]}

    playwright_api, chromium = browser
    shot = artifacts_dir() / "trigger-form.png"
    with logged_in_page(stack, playwright_api, chromium, f"/dags/{DAG_ID}") as page:
        page.wait_for_load_state("networkidle")

        def open_form():
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Run Parameters").wait_for(timeout=60_000)
            return dialog, dialog.get_by_role("button", name="Trigger", exact=True)

        # A bad chunk size cannot be entered: the field takes numbers only and holds them to 1..500.
        dialog, submit = open_form()
        chunk_size = dialog.locator("input[name=element_chunk_size]")
        for typed, kept in (("0", "1"), ("9999", "500")):
            chunk_size.fill(typed)
            chunk_size.blur()
            page.wait_for_timeout(500)
            assert chunk_size.input_value() == kept, (typed, chunk_size.input_value())
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden", timeout=30_000)

        # Untouched, the form is valid and submits.
        dialog, submit = open_form()
        assert submit.is_enabled()
        dialog.screenshot(path=str(shot))
        submit.click()
        dialog.wait_for(state="hidden", timeout=60_000)
    assert_form_screenshot(shot)

    new_runs = stack.wait_until(lambda: [r for r in stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
                                         if r["dag_run_id"] not in runs_before], 60, "the form's run to appear")
    (run,) = new_runs
    assert run["run_type"] == "manual" and run["conf"]["formats"] == list(SUBTITLE_FORMATS)
    assert run["conf"]["chunk_size"] is None and run["conf"]["manifest"] is None

    assert stack.wait_for_run(run["dag_run_id"], RUN_TIMEOUT_S) == "success"
    assert [k for k in s3.list_keys("processed/") if k.endswith("form-news.jsonl")]

    # An operator picks a lexicon in the form (one name per line of the field); the run applies it.
    s3.put_bytes("incoming/form-names.jsonl", jsonl(FORM_NAMES_LINE))
    runs_before |= {run["dag_run_id"]}
    with logged_in_page(stack, playwright_api, chromium, f"/dags/{DAG_ID}") as page:
        page.wait_for_load_state("networkidle")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Run Parameters").wait_for(timeout=60_000)
        lexicons = dialog.locator("#element_lexicons")
        lexicons.scroll_into_view_if_needed()
        lexicons.fill("harbour")
        lexicons.blur()
        submit = dialog.get_by_role("button", name="Trigger", exact=True)
        assert submit.is_enabled()
        submit.click()
        dialog.wait_for(state="hidden", timeout=60_000)
    (run,) = stack.wait_until(lambda: [r for r in stack.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
                                       if r["dag_run_id"] not in runs_before], 60, "the second form run to appear")
    assert run["conf"]["lexicons"] == ["harbour"], run["conf"]
    assert stack.wait_for_run(run["dag_run_id"], RUN_TIMEOUT_S) == "success"
    (names_batch,) = {key.split("/")[1] for key in s3.list_keys("batches/")
                      if s3.exists(BatchLayout(key.split("/")[1]).synthesis(FORM_NAMES_LINE["id"]))}
    synthesis = s3.get_json(BatchLayout(names_batch).synthesis(FORM_NAMES_LINE["id"]))
    assert synthesis["params"]["lexicon_entries"] == ["Nguyen: alias 'win' (harbour)"], synthesis["params"]

    # The API applies the same schema: a conf with a bad chunk size is refused before any run exists.
    refused = requests.post(f"{stack.base_url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30,
                            headers={"Authorization": f"Bearer {stack.token()}"},
                            json={"logical_date": None, "conf": {"chunk_size": 0}})
    assert refused.status_code == 400 and "chunk_size" in refused.text, (refused.status_code, refused.text[:300])


def assert_form_screenshot(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 10_000, path
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 30, f"{path} looks blank"
