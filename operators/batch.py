"""Airflow-side glue for the narration DAG: run context -> batch id and options, fallback planning, summaries.

Kept out of the DAG file so the DAG reads like the pipeline; everything here delegates to the core library.
"""

from __future__ import annotations

import logging
import os

from narration.layout import SUBTITLE_FORMATS, BatchLayout
from narration.lifecycle import batch_id_for
from narration.plan import BatchOptions, BatchPlan, load_plan, write_chunks
from narration.schema import ItemStatus
from narration.settings import Settings
from narration.storage import Storage

log = logging.getLogger(__name__)

AUTO = "auto"
GOOGLE_NOT_CONFIGURED = (
    "Google Speech-to-Text is not configured (set NARRATION_GOOGLE_ENDPOINT, GOOGLE_APPLICATION_CREDENTIALS "
    "or the google_cloud_default connection)"
)


def batch_id_from_context(context) -> str:
    dag_run = context["dag_run"]
    when = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None) or context["ts"]
    return batch_id_for(dag_run.run_id, when)


def options_from_params(params: dict, settings: Settings) -> BatchOptions:
    timing = params.get("timing_method") or AUTO
    synthesizer = params.get("synthesizer") or AUTO
    return BatchOptions(
        voice=params.get("voice") or None,
        language=params.get("language") or None,
        chunk_size=int(params.get("chunk_size") or settings.chunk_size),
        synthesizer=settings.synthesizer if synthesizer == AUTO else synthesizer,
        aligner=settings.aligner if timing in (AUTO, "google") else timing,
        timing_method="google" if timing == "google" else "primary",
        force_fallback=list(params.get("force_fallback") or []),
        formats=list(params.get("formats") or SUBTITLE_FORMATS),
        subtitle_profile=params.get("subtitle_profile") or "netflix-adult",
        subtitle_fps=params.get("subtitle_fps") or None,
        loudness_target_lufs=params.get("loudness_target_lufs"),
        true_peak_ceiling_dbtp=params.get("true_peak_ceiling_dbtp"),
        audio_encodings=params.get("audio_encodings"),
        vtt_word_timestamps=bool(params.get("vtt_word_timestamps")),
        force_rerender=bool(params.get("force_rerender")),
    )


def google_configured(settings: Settings) -> bool:
    from narration.align.google import is_configured

    return google_connection() is not None or is_configured(settings)


def existing_plan(storage: Storage, batch_id: str) -> BatchPlan | None:
    """The plan an earlier try of this run wrote, if it planned any item."""
    try:
        plan = load_plan(storage, batch_id)
    except KeyError:
        return None
    return plan if plan.items else None


def plan_fallback(storage: Storage, settings: Settings, batch_id: str, google_available: bool) -> list[dict]:
    """Items whose primary timing failed, cut into fallback chunks; and whether the fallback can run."""
    plan = load_plan(storage, batch_id)
    layout = BatchLayout(batch_id)
    docs = storage.map(lambda item: storage.get_json_or_none(layout.timing(item.item_id, plan.options.aligner)),
                       plan.items)
    needing = [item for item, doc in zip(plan.items, docs) if doc and doc.get("status") == ItemStatus.NEEDS_FALLBACK]
    chunks = []
    if needing and google_available:
        chunks = [c.model_dump() for c in write_chunks(storage, batch_id, needing, plan.options, prefix="f",
                                                       name_every_item=True)]
    log.info("%d item(s) need fallback timing: %s", len(needing), ", ".join(i.item_id for i in needing) or "none")
    if needing and not google_available:
        log.warning("fallback timing unavailable for %d item(s): %s", len(needing), GOOGLE_NOT_CONFIGURED)
    return chunks


def format_summary(summary: dict) -> str:
    """A readable per-run summary for the last task's log (and the demo's console)."""
    lines = [f"batch {summary.get('batch_id')}: {summary.get('items', 0)} row(s)"]
    for key in ("by_status", "by_timing_method"):
        if summary.get(key):
            lines.append(f"  {key.removeprefix('by_').replace('_', ' ')}: "
                         + ", ".join(f"{k}={v}" for k, v in summary[key].items()))
    for key in ("fallbacks", "untimed_words", "low_confidence_words", "cue_rule_violations"):
        if key in summary:
            lines.append(f"  {key.replace('_', ' ')}: {summary[key]}")
    lines.append(f"  report: s3://{summary.get('bucket')}/{summary.get('report_csv')}")
    return "\n".join(lines)


def google_connection():
    """The ``google_cloud_default`` Airflow connection, or None when there is none."""
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(os.environ.get("NARRATION_GOOGLE_CONN_ID", "google_cloud_default"))
    except Exception:
        return None


def google_credentials():
    """Service-account credentials from the connection's ``keyfile_dict`` extra, or None (then the client uses
    GOOGLE_APPLICATION_CREDENTIALS / the endpoint setting)."""
    conn = google_connection()
    if conn is None:
        return None
    extra = conn.extra_dejson
    keyfile = extra.get("keyfile_dict") or extra.get("extra__google_cloud_platform__keyfile_dict")
    if not keyfile:
        return None
    import json

    from google.oauth2 import service_account

    info = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
    return service_account.Credentials.from_service_account_info(
        info, scopes=["https://www.googleapis.com/auth/cloud-platform"])


# The DAG's task bodies: each imports the core library only when its task runs, so the DAG file parses cheaply.


def plan_run(context, params: dict) -> list[dict]:
    """Claim manifests, validate every line, quarantine bad ones and write chunk specs; the chunks to map over."""
    from airflow.sdk.exceptions import AirflowFailException

    from narration import lifecycle
    from narration.manifests import ManifestError
    from narration.plan import plan_batch
    from narration.voices import voice_ids
    from operators.connections import core_settings, storage

    settings, s3 = core_settings(), storage()
    batch_id = batch_id_from_context(context)
    existing = existing_plan(s3, batch_id)
    if existing is not None:  # a retried or cleared run re-uses its plan; finished items are skipped later
        return [c.model_dump() for c in existing.chunks]
    options = options_from_params(params, settings)
    keys = lifecycle.claim(s3, batch_id, lifecycle.discover(s3, params.get("manifest") or None,
                                                            settings.incoming_prefix), settings.incoming_prefix)
    try:
        plan = plan_batch(s3, settings, batch_id, keys, options, voice_ids(s3))
    except ManifestError as exc:  # bad input: retrying cannot help
        raise AirflowFailException(str(exc)) from exc
    return [c.model_dump() for c in plan.chunks]


def plan_fallback_for_run(context) -> list[dict]:
    from operators.connections import core_settings, storage

    settings = core_settings()
    return plan_fallback(storage(), settings, batch_id_from_context(context), google_configured(settings))


def google_align_chunk(chunk: dict) -> dict:
    """Time one fallback chunk with Google Speech-to-Text, credentials from the connection when it has them."""
    from narration.align.google import GoogleAligner
    from narration.pipeline import align_chunk, load_chunk
    from operators.connections import core_settings, storage

    s3, settings = storage(), core_settings()
    credentials = google_credentials()
    factory = (lambda s: GoogleAligner(s, credentials=credentials)) if credentials else None
    return align_chunk(s3, settings, load_chunk(s3, chunk["key"]), backend="google",
                       aligner_factory=factory).model_dump(mode="json")


def render_chunk_for_run(chunk: dict, params: dict) -> dict:
    from narration.pipeline import load_chunk
    from narration.render import AudioDelivery, render_chunk
    from operators.connections import core_settings, storage

    s3, settings = storage(), core_settings()
    fallback_unavailable = None if google_configured(settings) else GOOGLE_NOT_CONFIGURED
    audio = AudioDelivery.resolve(settings, params.get("loudness_target_lufs"), params.get("true_peak_ceiling_dbtp"),
                                  params.get("audio_encodings"))
    return render_chunk(s3, settings, load_chunk(s3, chunk["key"]), formats=params["formats"],
                        profile_name=params["subtitle_profile"], vtt_word_timestamps=params["vtt_word_timestamps"],
                        fallback_unavailable=fallback_unavailable, fps=params.get("subtitle_fps"),
                        audio=audio).model_dump(mode="json")


def write_report_for_run(context) -> dict:
    """The batch's CSV and HTML report and summary; prints the summary into the task log."""
    from narration.deliver import write_batch_report
    from operators.connections import core_settings, storage

    summary = write_batch_report(storage(), core_settings(), batch_id_from_context(context))
    for line in format_summary(summary).splitlines():
        print(line)
    return summary


def finish_manifests_for_run(context) -> dict:
    from narration import lifecycle
    from operators.connections import storage

    s3 = storage()
    batch_id = batch_id_from_context(context)
    return lifecycle.finish(s3, BatchLayout(batch_id).batch_id, lifecycle.manifest_outcomes(s3, batch_id))
