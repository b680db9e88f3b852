"""An Airflow notifier that posts a batch's failed items (and failed tasks) to a webhook, for on-call auditing.

Optional: the URL comes from the argument, the ``narration_webhook_url`` Variable or ``NARRATION_WEBHOOK_URL``;
without one it only logs. The JSON body carries a Slack/Teams-style ``text`` line plus the structured details.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from datetime import timedelta

from airflow.sdk import AsyncCallback, BaseNotifier, DeadlineAlert, DeadlineReference

log = logging.getLogger(__name__)

WEBHOOK_VARIABLE = "narration_webhook_url"
WEBHOOK_ENV = "NARRATION_WEBHOOK_URL"


def configured_webhook_url() -> str | None:
    """NARRATION_WEBHOOK_URL, else the ``narration_webhook_url`` Variable; None when neither is set or empty."""
    from operators.connections import configured

    return configured("webhook_url")


def failed_items(storage, batch_id: str) -> tuple[list[dict], int]:
    """(rows of the batch's items that did not end ``done``, quarantined lines included; total rows). The batch
    report's checked rows when its summary (written last) is there, else the items' records as they stand."""
    from narration.layout import BatchLayout
    from narration.schema import ItemStatus

    layout = BatchLayout(batch_id)
    if storage.exists(layout.summary):
        rows = [{"item_id": r["item_id"] or None, "manifest": r["manifest"], "line": int(r["line"]),
                 "status": r["status"], "error": r["error"] or None}
                for r in csv.DictReader(io.StringIO(storage.get_text(layout.report_csv)))]
    else:
        from narration.deliver import collect_rows

        rows = [{"item_id": r.item_id, "manifest": r.manifest, "line": r.line, "status": r.status, "error": r.error}
                for r in collect_rows(storage, batch_id)]
    failed = [row for row in rows if row["status"] != ItemStatus.DONE.value]
    return failed, len(rows)


class FailedItemsWebhookNotifier(BaseNotifier):
    """Posts a JSON summary of a narration batch's failed items to a webhook.

    Attach it to the report task as both ``on_success_callback`` and ``on_failure_callback``: it posts when
    items failed or the task failed, and stays quiet for a clean batch (``always=True`` posts every time).
    """

    template_fields: Sequence[str] = ("url",)

    def __init__(self, url: str | None = None, *, timeout_s: float = 10.0, max_items: int = 50,
                 always: bool = False):
        super().__init__()
        self.url = url
        self.timeout_s = timeout_s
        self.max_items = max_items
        self.always = always

    def build_payload(self, context) -> dict | None:
        """The webhook body for this run, or None when there is nothing to report."""
        from narration.layout import BatchLayout
        from operators.batch_tasks import batch_id_from_context
        from operators.connections import storage

        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        exception = context.get("exception")
        batch_id = BatchLayout(batch_id_from_context(context)).batch_id
        s3 = storage()
        payload = {
            "dag_id": getattr(dag_run, "dag_id", None),
            "run_id": getattr(dag_run, "run_id", None),
            "batch_id": batch_id,
            "task_id": getattr(ti, "task_id", None),
            "task_failed": exception is not None,
            "exception": str(exception) if exception is not None else None,
            "report": s3.uri(BatchLayout(batch_id).report_csv),
        }
        try:
            failed, total = failed_items(s3, batch_id)
        except KeyError:  # planning never wrote a plan: the task failure is all there is to say
            failed, total = [], 0
            payload["error"] = f"batch {batch_id} has no plan (planning failed)"
        if not failed and exception is None and not self.always:
            return None
        payload.update({
            "items": total,
            "failed": len(failed),
            "failed_items": failed[: self.max_items],
            "failed_items_left_out": max(0, len(failed) - self.max_items),
        })
        what = f"{len(failed)} of {total} item(s) failed" if total else "no items planned"
        task_note = f"; task {payload['task_id']} failed: {payload['exception']}" if exception is not None else ""
        payload["text"] = f"narration batch {batch_id}: {what}{task_note} (run {payload['run_id']})"
        return payload

    def notify(self, context) -> None:
        url = self.url or configured_webhook_url()
        if not url:
            self.log.info("no webhook configured (%s Variable or %s): not notifying", WEBHOOK_VARIABLE, WEBHOOK_ENV)
            return
        payload = self.build_payload(context)
        if payload is None:
            self.log.info("batch has no failed items: not notifying")
            return
        import requests

        response = requests.post(url, json=payload, timeout=self.timeout_s)
        response.raise_for_status()
        self.log.info("posted %d failed item(s) of batch %s to the webhook (HTTP %s)",
                      payload["failed"], payload["batch_id"], response.status_code)


async def notify_late_batch(dag_id: str, late_after: str, context: dict | None = None) -> None:
    """Deadline callback (run by the triggerer): a batch run is still going past its deadline. Posts to the
    configured webhook, else logs a warning."""
    dag_run = (context or {}).get("dag_run") or {}
    run_id = dag_run.get("dag_run_id") if isinstance(dag_run, dict) else getattr(dag_run, "run_id", None)
    text = f"narration batch run {run_id or '?'} of {dag_id} is still running {late_after} after it was queued"
    url = configured_webhook_url()
    if not url:
        log.warning("%s (no webhook configured: %s Variable or %s)", text, WEBHOOK_VARIABLE, WEBHOOK_ENV)
        return
    import asyncio

    import requests

    response = await asyncio.to_thread(requests.post, url, json={"text": text, "dag_id": dag_id, "run_id": run_id,
                                                                 "late_after": late_after}, timeout=10)
    response.raise_for_status()
    log.warning("%s: posted to the webhook (HTTP %s)", text, response.status_code)


def late_batch_deadline(after: timedelta) -> DeadlineAlert:
    """Alert when a batch run is still running ``after`` past the moment it was queued."""
    return DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=after,
                         callback=AsyncCallback(notify_late_batch, kwargs={"dag_id": "narration_batch",
                                                                           "late_after": str(after)}))
