"""A real scheduler run: Airflow's api-server, scheduler and dag-processor (SQLite, LocalExecutor) run narration_batch
triggered through REST API v2, and headless Chromium saves the run's grid view with its labelled mapped instances.

Screenshots and component logs go to $NARRATION_ARTIFACTS (default ./artifacts/scheduler/).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from narration.layout import SUBTITLE_FORMATS, BatchLayout
from narration.local_s3 import free_port
from tests.dag_runs import jsonl

pytestmark = pytest.mark.scheduler

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "narration_batch"
RUN_TIMEOUT_S = float(os.environ.get("NARRATION_SCHEDULER_TIMEOUT_S", "420"))
LINES = [
    {"id": "s1", "text": "The council met on Tuesday."},
    {"id": "s2", "text": "Doors open at 10:30."},
    "{not json",
    {"id": "s3", "text": "Rain is expected tonight."},
]
# Flags for Chromium on a machine with no display and a closed network (see the env notes in the README).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("NARRATION_ARTIFACTS") or REPO / "artifacts") / "scheduler"
    path.mkdir(parents=True, exist_ok=True)
    return path


class AirflowStack:
    """api-server, scheduler and dag-processor as child processes on one SQLite metadata DB."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor")

    def __init__(self, home: Path, s3_env: dict[str, str], log_dir: Path):
        self.home = home
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.processes: dict[str, subprocess.Popen] = {}
        self.started_s = 0.0
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env = {
            **inherited, **s3_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Only the REST-triggered run: the nightly schedule's latest run would claim the manifest first.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.base_url,
            # Tasks report to the api-server's execution API; without this they dial :8080 and fail.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # not 8793: another Airflow may hold it
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(log_dir / "tasks"),  # task logs kept with the artifacts
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "NARRATION_RUNNER": "local",
        }

    def cli(self, *args: str) -> None:
        subprocess.run([self.airflow, *args], env=self.env, check=True, capture_output=True, timeout=300)

    def start(self) -> AirflowStack:
        started = time.monotonic()
        self.cli("db", "migrate")
        self.cli("pools", "set", "narration_gpu", "2", "worker slots")
        for name in self.COMPONENTS:
            with open(self.log_dir / f"{name}.log", "wb") as log:  # the child keeps its own copy of the handle
                self.processes[name] = subprocess.Popen([self.airflow, name], env=self.env, stdout=log,
                                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_until(lambda: requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).ok, 180,
                        "the api-server to answer")
        self.started_s = time.monotonic() - started
        return self

    def wait_until(self, check, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited with {process.returncode} while waiting for {what}; "
                                       f"see {self.log_dir / (name + '.log')}")
            try:
                result = check()
                if result:
                    return result
            except requests.RequestException:
                pass
            time.sleep(1)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}; logs in {self.log_dir}")

    def password(self) -> str:
        """The admin password the simple auth manager generated at start."""
        generated = self.home / "simple_auth_manager_passwords.json.generated"
        return self.wait_until(lambda: generated.exists() and json.loads(generated.read_text()).get("admin"), 60,
                               "the generated password file")

    def stop(self) -> None:
        for process in self.processes.values():  # each component leads its own process group (its task workers)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def seeded_bucket(s3_server, narrator_wav) -> str:
    from narration.settings import Settings
    from narration.storage import Storage
    from narration.voices import upload_voice

    bucket = f"sched-{secrets.token_hex(4)}"
    s3 = Storage.from_settings(Settings(bucket=bucket))
    s3.ensure_bucket()
    upload_voice(s3, "narrator", narrator_wav, "This is the narrator's reference voice for the tests.")
    s3.put_bytes("incoming/scheduler-news.jsonl", jsonl(*LINES))
    return bucket


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server, seeded_bucket):
    log_dir = artifacts_dir() / "logs"
    shutil.rmtree(log_dir, ignore_errors=True)  # this run's logs only
    log_dir.mkdir()
    stack = AirflowStack(tmp_path_factory.mktemp("airflow-home"), {**s3_server.env(seeded_bucket)}, log_dir)
    try:
        yield stack.start()
    finally:
        stack.stop()


def api(stack: AirflowStack, token: str, method: str, path: str, **kwargs) -> dict:
    response = requests.request(method, f"{stack.base_url}/api/v2{path}", timeout=30,
                                headers={"Authorization": f"Bearer {token}"}, **kwargs)
    assert response.ok, (response.status_code, response.text[:500])
    return response.json()


def test_rest_triggered_run_succeeds_writes_outputs_and_shows_labelled_mapped_instances(browser, stack, seeded_bucket):
    started = time.monotonic()
    login = requests.post(f"{stack.base_url}/auth/token", json={"username": "admin", "password": stack.password()},
                          timeout=30)
    assert login.status_code == 201, login.text
    token = login.json()["access_token"]
    assert requests.get(f"{stack.base_url}/api/v2/dags", timeout=30).status_code == 401  # the API wants the token

    def dag_is_parsed():
        errors = api(stack, token, "GET", "/importErrors")["import_errors"]
        assert not errors, errors
        response = requests.get(f"{stack.base_url}/api/v2/dags/{DAG_ID}", timeout=10,
                                headers={"Authorization": f"Bearer {token}"})
        return response.ok and response.json()

    dag = stack.wait_until(dag_is_parsed, 180, f"the dag-processor to parse {DAG_ID}")
    parsed_s = time.monotonic() - started
    assert dag["is_paused"] is False and "narration" in {tag["name"] for tag in dag["tags"]}

    conf = {"chunk_size": 2, "formats": ["srt", "vtt", "json"], "manifest": "incoming/scheduler-news.jsonl"}
    run = api(stack, token, "POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    run_id = run["dag_run_id"]
    assert run["conf"] == conf

    def finished():
        state = api(stack, token, "GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}")["state"]
        return state if state in ("success", "failed") else None

    state = stack.wait_until(finished, RUN_TIMEOUT_S, f"run {run_id} to finish")
    run_s = time.monotonic() - started - parsed_s
    tis = api(stack, token, "GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances",
              params={"limit": 100})["task_instances"]
    summary = sorted((ti["task_id"], ti["map_index"], ti["state"]) for ti in tis)
    assert state == "success", summary

    labels = sorted(ti["rendered_map_index"] for ti in tis if ti["task_id"] == "synthesize")
    assert labels == ["c0000 s1..s2 (2)", "c0001 s3 (1)"]
    assert {ti["state"] for ti in tis if ti["task_id"] in ("synthesize", "align", "render_subtitles")} == {"success"}

    # The outputs, in the bucket the connection points at.
    from narration.settings import Settings
    from narration.storage import Storage

    s3 = Storage.from_settings(Settings(bucket=seeded_bucket))
    (batch_id,) = {key.split("/")[1] for key in s3.list_keys("batches/")}
    layout = BatchLayout(batch_id)
    for item_id in ("s1", "s2", "s3"):
        result = s3.get_json(layout.result(item_id))
        assert result["status"] == "done" and result["synthesizer"] == "espeak", result
        for kind in ("audio", "srt", "vtt", "json"):
            assert s3.exists(result[f"{kind}_key"]), (item_id, kind)
    assert s3.exists(layout.report_csv) and s3.get_json(layout.summary)["by_status"] == {"done": 3, "quarantined": 1}
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
    missing = None
    try:
        from playwright import sync_api
    except ImportError:
        missing = "pip install playwright (it drives the system Chromium; no browser download)"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing = "apt-get install -y chromium"
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no browser for the screenshot: {missing}")
    return sync_api, chromium


def screenshot_grid(stack: AirflowStack, run_id: str, playwright_api, chromium: str) -> dict[str, Path]:
    """Log in through the UI's form, then save the run's grid view and the mapped-instance list of synthesize."""
    out = artifacts_dir()
    run_url = f"{stack.base_url}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id)}"
    shots = {"grid": out / "grid-run.png", "mapped": out / "grid-mapped-synthesize.png"}
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(out / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            page.goto(f"{stack.base_url}/auth/login?next={urllib.parse.quote(run_url)}")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", stack.password())
            page.click("button[type=submit]")
            page.wait_for_url(f"{run_url}*", timeout=60_000)
            page.get_by_text("render_subtitles").first.wait_for(timeout=60_000)  # the grid's task rows are drawn
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(shots["grid"]))

            page.goto(f"{run_url}/tasks/synthesize/mapped")
            page.get_by_text("c0000 s1..s2 (2)").first.wait_for(timeout=60_000)
            page.get_by_text("c0001 s3 (1)").first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(shots["mapped"]))
        finally:
            context.close()
            shutil.rmtree(out / "chromium-profile", ignore_errors=True)
    return shots


def assert_real_screenshot(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 20_000, path
    with Image.open(path) as image:
        assert image.size == (1600, 1000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, f"{path} looks blank ({len(colours)} colours)"


FORM_LINES = [{"id": "f1", "text": "Triggered from the form."}, {"id": "f2", "text": "With every default."}]


def test_trigger_form_submits_with_its_defaults_and_refuses_a_bad_chunk_size(browser, stack, seeded_bucket):
    """The UI as an operator meets it: the Trigger form, submitted untouched, starts a run that narrates what is
    under incoming/; a chunk size outside 1..500 cannot be entered, and the API refuses one in the conf."""
    from narration.settings import Settings
    from narration.storage import Storage

    s3 = Storage.from_settings(Settings(bucket=seeded_bucket))
    s3.put_bytes("incoming/form-news.jsonl", jsonl(*FORM_LINES))
    token = requests.post(f"{stack.base_url}/auth/token", timeout=30,
                          json={"username": "admin", "password": stack.password()}).json()["access_token"]
    runs_before = {r["dag_run_id"] for r in api(stack, token, "GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]}

    playwright_api, chromium = browser
    shot = artifacts_dir() / "trigger-form.png"
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(artifacts_dir() / "chromium-profile"), executable_path=chromium, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            page.goto(f"{stack.base_url}/auth/login?next={urllib.parse.quote(f'/dags/{DAG_ID}')}")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", stack.password())
            page.click("button[type=submit]")
            page.wait_for_url(f"{stack.base_url}/dags/{DAG_ID}*", timeout=60_000)
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
        finally:
            context.close()
            shutil.rmtree(artifacts_dir() / "chromium-profile", ignore_errors=True)
    assert_form_screenshot(shot)

    new_runs = stack.wait_until(lambda: [r for r in api(stack, token, "GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
                                         if r["dag_run_id"] not in runs_before], 60, "the form's run to appear")
    (run,) = new_runs
    assert run["run_type"] == "manual" and run["conf"]["formats"] == list(SUBTITLE_FORMATS)
    assert run["conf"]["chunk_size"] is None and run["conf"]["manifest"] is None

    def finished():
        state = api(stack, token, "GET", f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run['dag_run_id'])}")["state"]
        return state if state in ("success", "failed") else None

    assert stack.wait_until(finished, RUN_TIMEOUT_S, "the form's run to finish") == "success"
    assert [k for k in s3.list_keys("processed/") if k.endswith("form-news.jsonl")]

    # The API applies the same schema: a conf with a bad chunk size is refused before any run exists.
    refused = requests.post(f"{stack.base_url}/api/v2/dags/{DAG_ID}/dagRuns", timeout=30,
                            headers={"Authorization": f"Bearer {token}"},
                            json={"logical_date": None, "conf": {"chunk_size": 0}})
    assert refused.status_code == 400 and "chunk_size" in refused.text, (refused.status_code, refused.text[:300])


def assert_form_screenshot(path: Path) -> None:
    from PIL import Image

    assert path.is_file() and path.stat().st_size > 10_000, path
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 30, f"{path} looks blank"
