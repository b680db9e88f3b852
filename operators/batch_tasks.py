"""The bodies of the narration DAG's Python tasks: run context -> batch id and options, configuration checks,
planning, fallback planning, Google alignment, rendering, the report and the manifests' last move.

Kept out of the DAG file so the DAG reads like the pipeline; everything here delegates to the core library. Heavy
modules (boto3 through narration.storage, pandas, numpy) are imported inside the functions, so importing this
module costs next to nothing.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from narration.align import FALLBACK_ALIGNER

if TYPE_CHECKING:
    from narration.plan import BatchOptions, BatchPlan
    from narration.preflight import Source
    from narration.settings import Settings
    from narration.storage import Storage

log = logging.getLogger(__name__)

AUTO = "auto"
PLAN_TASK_ID = "plan_batch"
GOOGLE_NOT_CONFIGURED = (
    "Google Speech-to-Text is not configured (set NARRATION_GOOGLE_ENDPOINT, GOOGLE_APPLICATION_CREDENTIALS "
    "or the google_cloud_default connection)"
)


def batch_id_from_context(context) -> str:
    from narration.lifecycle import batch_id_for

    dag_run = context["dag_run"]
    when = getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None) or context["ts"]
    return batch_id_for(dag_run.run_id, when)


def options_from_params(params: dict, settings: Settings, fallback_unavailable: str | None = None
                        ) -> BatchOptions:
    """The run's options from its Params (and why the fallback cannot run, when it cannot); ``formats`` left out
    (None) means every format, an empty list means the batch asks for audio only; a Param left out or empty
    takes the option's default."""
    from narration.plan import BatchOptions

    timing = params.get("timing_method") or AUTO
    synthesizer = params.get("synthesizer") or AUTO
    chosen = {name: params[name] for name in ("formats", "subtitle_profile") if params.get(name) is not None}
    return BatchOptions(
        **chosen,
        voice=params.get("voice") or None,
        language=params.get("language") or None,
        chunk_size=int(params.get("chunk_size") or settings.chunk_size),
        synthesizer=settings.synthesizer if synthesizer == AUTO else synthesizer,
        aligner=settings.aligner if timing in (AUTO, FALLBACK_ALIGNER) else timing,
        timing_method=FALLBACK_ALIGNER if timing == FALLBACK_ALIGNER else "primary",
        force_fallback=list(params.get("force_fallback") or []),
        fallback_unavailable=fallback_unavailable,
        subtitle_fps=params.get("subtitle_fps") or None,
        loudness_target_lufs=params.get("loudness_target_lufs"),
        true_peak_ceiling_dbtp=params.get("true_peak_ceiling_dbtp"),
        audio_encodings=params.get("audio_encodings"),
        vtt_word_timestamps=bool(params.get("vtt_word_timestamps")),
        force_rerender=bool(params.get("force_rerender")),
        lexicons=list(params.get("lexicons") or []),
    )


def setting_sources(params: dict, environ: dict[str, str] | None = None) -> dict[str, Source]:
    """Where each checked setting's value came from on the Airflow side: a Param when the run chose it, else the
    environment (or its default); S3's endpoint and credentials from the AWS connection unless the environment
    names an endpoint."""
    from narration.preflight import Source, default_sources
    from operators.connections import AWS_CONN_ID

    environ = os.environ if environ is None else environ
    sources = default_sources(environ)
    timing = params.get("timing_method") or AUTO
    if (params.get("synthesizer") or AUTO) != AUTO:
        sources["synthesizer"] = Source("synthesizer", "Param")
    if timing not in (AUTO, FALLBACK_ALIGNER):
        sources["aligner"] = Source("timing_method", "Param")
    sources["timing_method"] = Source("timing_method", "Param")
    sources["lexicons"] = Source("lexicons", "Param")
    if "NARRATION_S3_ENDPOINT_URL" not in environ:
        sources["endpoint"] = Source("endpoint_url", f"the extra of connection {AWS_CONN_ID}")
    sources["credentials"] = Source("login / password", f"connection {AWS_CONN_ID}")
    return sources


def check_configuration(params: dict, settings: Settings, options: BatchOptions, batch_id: str) -> None:
    """Fail the run now (no retries) on a configuration mistake: bucket, endpoint, credentials, backends,
    Google. S3 that does not answer is waited for ``s3_preflight_retry_s`` only."""
    from narration.preflight import ConfigurationError
    from narration.preflight import check_configuration as check
    from operators.connections import storage

    probe = storage(settings.model_copy(update={"s3_outage_retry_s": settings.s3_preflight_retry_s,
                                                "s3_max_attempts": 2}))
    try:
        check(probe, options, batch_id, google_configured=options.fallback_unavailable is None,
              sources=setting_sources(params))
    except ConfigurationError as exc:
        raise AirflowFailException(f"configuration error: {exc}") from exc


def plan_batch(context, params: dict) -> list[dict]:
    """The plan_batch task: check the configuration, then claim manifests, validate every line, quarantine bad
    ones and write chunk specs; a retried or cleared run re-uses its plan with this try's options."""
    from narration import lifecycle
    from narration.lexicons import LexiconError
    from narration.manifests import ManifestError
    from narration.plan import plan_batch as plan_in_s3
    from narration.voices import voice_ids
    from operators.connections import core_settings, storage

    settings = core_settings()
    batch_id = batch_id_from_context(context)
    options = options_from_params(params, settings,
                                  None if google_configured(settings) else GOOGLE_NOT_CONFIGURED)
    check_configuration(params, settings, options, batch_id)
    s3 = storage(settings)
    existing = existing_plan(s3, batch_id)
    if existing is not None:  # finished items are skipped later, unless this try forces them
        return [c.model_dump() for c in refresh_plan(s3, existing, options).chunks]
    selector = params.get("manifest") or None
    claim = lifecycle.claim_manifests(s3, batch_id, lifecycle.discover(s3, selector, settings.incoming_prefix),
                                      settings.incoming_prefix)
    held = claim.held or ({selector: owner} if selector and (owner := lifecycle.holder(s3, selector)) else {})
    if not claim.claimed and held:
        raise AirflowFailException("nothing to narrate: " + "; ".join(
            f"{key} is already claimed by batch {owner}" for key, owner in sorted(held.items())))
    for key, owner in sorted(held.items()):
        log.warning("left %s to batch %s, which holds it", key, owner)
    try:
        plan = plan_in_s3(s3, settings, batch_id, claim.claimed, options, voice_ids(s3))
    except (ManifestError, LexiconError) as exc:  # bad input or a malformed lexicon: retrying cannot help
        raise AirflowFailException(str(exc)) from exc
    return [c.model_dump() for c in plan.chunks]


def refresh_plan(storage: Storage, plan: BatchPlan, options: BatchOptions) -> BatchPlan:
    """The plan with this try's options: items and chunking stay, while every choice the chunk specs carry
    (backends, routing, output choices, ``force_rerender``) follows the current Params (chunk specs rewritten where
    they changed)."""
    from narration.layout import BatchLayout
    from narration.pipeline import load_chunk

    layout = BatchLayout(plan.batch_id)
    current = plan.options.model_copy(update=options.model_dump(exclude={"voice", "language", "chunk_size",
                                                                          "lexicons"}))
    for ref in plan.chunks:
        spec = load_chunk(storage, ref.key)
        choices = current.chunk_choices()
        wanted = spec.model_copy(update={**choices, "params": {**spec.params, **choices["params"]}})
        if wanted != spec:
            storage.put_json(layout.chunk(spec.chunk_id), wanted)
    if current != plan.options:
        log.info("re-run with changed options: %s", {k: v for k, v in current.model_dump().items()
                                                      if getattr(plan.options, k) != v})
        plan = plan.model_copy(update={"options": current})
        storage.put_json(layout.plan, plan)
    return plan


def require_plan(context, settings: Settings) -> None:
    """For tasks that run whatever happened upstream (report, fallback planning, manifest moves): when planning
    failed before it wrote a plan (a configuration error, a manifest held by another batch) there is nothing to
    do: skip. When it failed and S3 does not answer either, fail at once rather than wait out every retry."""
    if context["ti"].xcom_pull(task_ids=PLAN_TASK_ID) is not None:
        return
    from narration.layout import BatchLayout
    from narration.storage import StorageError
    from operators.connections import storage

    probe = storage(settings.model_copy(update={"s3_outage_retry_s": 0.0, "s3_max_attempts": 1}))
    batch_id = batch_id_from_context(context)
    try:
        planned = probe.exists(BatchLayout(batch_id).plan)
    except StorageError as exc:
        raise AirflowFailException(f"planning failed, and S3 cannot be read either: {exc}") from exc
    if not planned:
        raise AirflowSkipException(f"planning failed before batch {batch_id} had a plan: nothing to do")


def google_configured(settings: Settings) -> bool:
    from narration.align.google import is_configured

    return google_connection() is not None or is_configured(settings)


def existing_plan(storage: Storage, batch_id: str) -> BatchPlan | None:
    """The plan an earlier try of this run wrote, if it planned any item."""
    from narration.plan import load_plan

    try:
        plan = load_plan(storage, batch_id)
    except KeyError:
        return None
    return plan if plan.items else None


def plan_fallback(storage: Storage, batch_id: str) -> list[dict]:
    """Items whose primary timing failed, cut into fallback chunks when the fallback can run (the plan says)."""
    from narration.layout import BatchLayout
    from narration.pipeline import read_record
    from narration.plan import load_plan, write_chunks
    from narration.schema import ItemStatus, TimingRecord

    plan = load_plan(storage, batch_id)
    layout = BatchLayout(batch_id)
    records = storage.map(lambda item: read_record(storage, layout.timing(item.item_id, plan.options.aligner),
                                                   TimingRecord)[0], plan.items)
    needing = [item for item, record in zip(plan.items, records)
               if record and record.status == ItemStatus.NEEDS_FALLBACK]
    chunks = []
    unavailable = plan.options.fallback_unavailable
    if needing and not unavailable:
        chunks = [c.model_dump() for c in write_chunks(storage, batch_id, needing, plan.options, fallback=True)]
    log.info("%d item(s) need fallback timing: %s", len(needing), ", ".join(i.item_id for i in needing) or "none")
    if needing and unavailable:
        log.warning("fallback timing unavailable for %d item(s): %s", len(needing), unavailable)
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
    for key, verdict in (summary.get("manifests") or {}).items():
        lines.append(f"  manifest {key}: {verdict['state']} ({verdict['delivered']}/{verdict['valid_lines']} "
                     "valid lines delivered)")
    lines.append(f"  report: s3://{summary.get('bucket')}/{summary.get('report_csv')}")
    return "\n".join(lines)


def google_connection():
    """The Google Airflow connection (``NARRATION_GOOGLE_CONN_ID`` or Variable ``narration_google_conn_id``, default
    ``google_cloud_default``), or None when there is none."""
    from operators.connections import configured

    conn_id = configured("google_conn_id", "google_cloud_default")
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(conn_id)
    except Exception:
        return None


def google_service_account_key() -> dict | None:
    """The service-account key in the connection's ``keyfile_dict`` extra, or None (then the client uses
    GOOGLE_APPLICATION_CREDENTIALS / the endpoint setting)."""
    conn = google_connection()
    if conn is None:
        return None
    extra = conn.extra_dejson
    keyfile = extra.get("keyfile_dict") or extra.get("extra__google_cloud_platform__keyfile_dict")
    if not keyfile:
        return None
    import json

    return json.loads(keyfile) if isinstance(keyfile, str) else keyfile


# The DAG's task bodies: each imports the core library only when its task runs, so the DAG file parses cheaply.
# Each builds its Settings and its storage (one S3Hook session) once.


def plan_fallback_for_run(context) -> list[dict]:
    from operators.connections import core_settings, storage

    settings = core_settings()
    require_plan(context, settings)
    return plan_fallback(storage(settings), batch_id_from_context(context))


def google_align_chunk(chunk: dict) -> dict:
    """Time one fallback chunk with Google Speech-to-Text, signed in with the connection's key when it has one."""
    from narration.pipeline import align_chunk, load_chunk
    from operators.connections import core_settings, storage

    settings = core_settings()
    s3 = storage(settings)
    account = google_service_account_key()
    if account:
        settings = settings.model_copy(update={"google_service_account_key": account})
    return align_chunk(s3, settings, load_chunk(s3, chunk["key"])).model_dump(mode="json")


def render_chunk_for_run(chunk: dict) -> dict:
    """Render one chunk as the run's choices in its spec say."""
    from narration.pipeline import load_chunk
    from narration.render import render_chunk
    from operators.connections import core_settings, storage

    settings = core_settings()
    s3 = storage(settings)
    return render_chunk(s3, settings, load_chunk(s3, chunk["key"])).model_dump(mode="json")


def write_report_for_run(context) -> dict:
    """The batch's CSV and HTML report and summary; prints the summary into the task log."""
    from narration.deliver import write_batch_report
    from operators.connections import core_settings, storage

    settings = core_settings()
    require_plan(context, settings)
    summary = write_batch_report(storage(settings), settings, batch_id_from_context(context))
    for line in format_summary(summary).splitlines():
        print(line)
    return summary


def finish_manifests_for_run(context) -> dict:
    from narration import lifecycle
    from narration.layout import BatchLayout
    from operators.connections import core_settings, storage

    settings = core_settings()
    require_plan(context, settings)
    s3 = storage(settings)
    batch_id = batch_id_from_context(context)
    return lifecycle.finish(s3, BatchLayout(batch_id).batch_id, lifecycle.manifest_outcomes(s3, batch_id))
