"""The failed-items webhook notifier in real Airflow task callbacks (``dag.test()`` on SQLite), posting to a real
HTTP server on 127.0.0.1, with the batch's plan and report rows in the local S3 server.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

LINES = [
    {"id": "ok1", "text": "This line is narrated."},
    {"id": "lost", "text": "This line never gets a result."},
    "{not json",
]


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def webhook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


NOTIFY_DAG = """
from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from narration.layout import BatchLayout
from narration.plan import BatchOptions, plan_batch
from narration.report import ItemReportRow
from operators.batch_tasks import batch_id_from_context
from operators.connections import core_settings, storage
from operators.notify import FailedItemsWebhookNotifier
from tests.dag_runs import jsonl

notifier = FailedItemsWebhookNotifier(url="{{ params.webhook_url }}")


@dag(dag_id="notify_under_test", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
     params={"webhook_url": Param("", type="string"), "lines": Param([], type="array"),
             "fail": Param(False, type="boolean"), "finish_items": Param(False, type="boolean")})
def notify_under_test():
    @task(on_success_callback=notifier, on_failure_callback=notifier)
    def report(params=None):
        s3 = storage()
        batch_id = batch_id_from_context(get_current_context())
        if params["fail"]:
            raise RuntimeError("report storage unreachable")
        s3.put_bytes("incoming/news.jsonl", jsonl(*params["lines"]))
        plan = plan_batch(s3, core_settings(), batch_id, ["incoming/news.jsonl"], BatchOptions(), {"narrator"})
        if params["finish_items"]:
            for item in plan.items:
                row = ItemReportRow(item_id=item.item_id, manifest=item.manifest, line=item.line, status="done")
                s3.put_json(BatchLayout(batch_id).result(item.item_id), row)

    report()


notify_under_test()
"""


@pytest.fixture()
def notify_dag(tmp_path, monkeypatch, airflow_db):
    """Loads the DAG above from its own bundle folder (``dag.test()`` runs only DAGs a bundle holds)."""
    import importlib.util

    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "notify_under_test.py").write_text(NOTIFY_DAG)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "notify-tests", "classpath": local, "kwargs": {"path": str(folder)}},
    ]))

    def load():
        # A fresh DAG object per run: a notifier renders its templated url in place, once.
        spec = importlib.util.spec_from_file_location("notify_under_test", folder / "notify_under_test.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.notify_under_test()

    return load


def _run(load_dag, **conf) -> str:
    run = load_dag().test(run_conf={"lines": LINES, **conf})
    return str(run.state.value if hasattr(run.state, "value") else run.state)


def test_failed_items_are_posted_after_the_report(storage, notify_dag, webhook):
    url = f"http://127.0.0.1:{webhook.server_port}/hooks/narration"
    assert _run(notify_dag, webhook_url=url) == "success"
    ((path, content_type, body),) = webhook.received
    assert path == "/hooks/narration" and content_type == "application/json"
    assert body["dag_id"] == "notify_under_test" and body["task_id"] == "report" and body["task_failed"] is False
    assert body["items"] == 3 and body["failed"] == 3
    by_line = {item["line"]: item for item in body["failed_items"]}
    assert by_line[3]["status"] == "quarantined" and "invalid JSON" in by_line[3]["error"]
    assert by_line[2]["item_id"] == "lost" and "no result record" in by_line[2]["error"]
    assert body["text"].startswith(f"narration batch {body['batch_id']}: 3 of 3 item(s) failed")
    assert body["report"] == f"s3://{storage.bucket}/batches/{body['batch_id']}/report.csv"


def test_a_failed_task_is_posted_with_its_error(storage, notify_dag, webhook, monkeypatch):
    monkeypatch.setenv("NARRATION_WEBHOOK_URL", f"http://127.0.0.1:{webhook.server_port}/env-configured")
    assert _run(notify_dag, fail=True) == "failed"
    ((path, _, body),) = webhook.received
    assert path == "/env-configured"
    assert body["task_failed"] is True and body["exception"] == "report storage unreachable"
    assert body["failed"] == 0 and "has no plan" in body["error"]
    assert "task report failed: report storage unreachable" in body["text"]


def test_a_clean_batch_or_no_webhook_posts_nothing(storage, notify_dag, webhook, monkeypatch):
    from operators.notify import configured_webhook_url

    url = f"http://127.0.0.1:{webhook.server_port}/hooks"
    clean = [line for line in LINES if isinstance(line, dict)]
    assert _run(notify_dag, webhook_url=url, lines=clean, finish_items=True) == "success"
    monkeypatch.delenv("NARRATION_WEBHOOK_URL", raising=False)
    assert configured_webhook_url() is None
    assert _run(notify_dag, fail=True) == "failed"  # no URL anywhere: the failure is only logged
    assert webhook.received == []
