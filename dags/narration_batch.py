"""
### Narration batch

Turns text manifests dropped under `incoming/` in the narration bucket into narrated audio, word timings,
subtitles (SRT, VTT, ASS, JSON, CSV) and a batch report with download links.

1. **plan_batch** claims the manifests, validates every line (bad lines are quarantined with file, line and
   reason) and cuts the good items into chunks.
2. **synthesize** and **align** run the worker once per chunk (one model load each), locally or in Docker.
3. **route_timing** sends items whose primary timing failed to **google_align** (Google Speech-to-Text), or goes
   straight on when none did.
4. **render_subtitles**, **write_report** and **finish_manifests** deliver and account for every line.

Runs nightly at 02:00 UTC and on manual trigger (see the Params form).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, Metadata, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from narration import lifecycle
from narration.deliver import write_batch_report
from narration.layout import BatchLayout
from narration.pipeline import align_chunk, load_chunk
from narration.render import render_chunk
from operators import batch as glue
from operators.connections import core_settings, storage
from operators.notify import FailedItemsWebhookNotifier
from operators.worker import worker_operator_class

BATCH_OUTPUTS = Asset("narration_batch_outputs", uri="s3://narration/batches/")
WorkerOperator = worker_operator_class()
FORMATS = ["srt", "vtt", "ass", "json", "csv"]
notify_failures = FailedItemsWebhookNotifier()  # posts failed/quarantined items when a webhook URL is configured

PARAMS = {
    "manifest": Param("", type="string", title="Manifest key or prefix",
                      description="S3 key or prefix of the manifest(s) to narrate; empty takes everything under "
                                  "incoming/."),
    "voice": Param("", type="string", title="Default voice",
                   description="Voice for lines that name none; empty uses the configured default voice."),
    "language": Param("en", type="string", enum=["en", "en-us", "en-gb"], title="Default language"),
    "timing_method": Param("auto", type="string", enum=["auto", "pocketsphinx", "whisperx", "google"],
                           title="Timing method",
                           description="auto: the configured primary aligner with Google as fallback; google: "
                                       "every item timed by Google Speech-to-Text."),
    "synthesizer": Param("auto", type="string", enum=["auto", "espeak", "f5tts"], title="Synthesizer"),
    "chunk_size": Param(16, type="integer", minimum=1, maximum=500, title="Items per chunk",
                        description="Items per worker invocation; each chunk loads its model once."),
    "formats": Param(FORMATS, type="array", items={"type": "string", "enum": FORMATS}, title="Output formats"),
    "subtitle_profile": Param("netflix-adult", type="string", enum=["netflix-adult", "netflix-adult-20cps"],
                              title="Subtitle profile"),
    "vtt_word_timestamps": Param(False, type="boolean", title="Karaoke timestamps in WebVTT"),
    "force_fallback": Param([], type="array", items={"type": "string"}, title="Items to re-time with Google",
                            description="Item ids routed to the fallback aligner whatever the primary does."),
    "force_rerender": Param(False, type="boolean", title="Redo finished items",
                            description="Ignore outputs a previous run already produced for the same inputs."),
}


@dag(
    dag_id="narration_batch",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,
    params=PARAMS,
    doc_md=__doc__,
    tags=["narration", "tts", "subtitles"],
    default_args={"owner": "narration", "retries": 2, "retry_delay": timedelta(seconds=20),
                  "retry_exponential_backoff": 2.0, "max_retry_delay": timedelta(minutes=10)},
)
def narration_batch():
    @task
    def plan_batch(params=None) -> list[dict]:
        """Check the configuration, claim manifests, validate every line, quarantine bad ones, write chunk specs."""
        return glue.plan_batch(get_current_context(), params)

    chunks = plan_batch()

    synthesize = WorkerOperator.partial(
        task_id="synthesize", step="synthesize", pool="narration_gpu", map_index_template="{{ task.chunk.label }}",
    ).expand(chunk=chunks)

    align = WorkerOperator.partial(
        task_id="align", step="align", pool="narration_gpu", map_index_template="{{ task.chunk.label }}",
        trigger_rule=TriggerRule.ALL_DONE,
    ).expand(chunk=chunks)

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def plan_fallback() -> list[dict]:
        """Find items whose primary timing failed and cut them into fallback chunks."""
        glue.require_plan(get_current_context())
        batch_id = glue.batch_id_from_context(get_current_context())
        return glue.plan_fallback(storage(), core_settings(), batch_id, glue.google_configured(core_settings()))

    fallback_chunks = plan_fallback()

    @task.branch
    def route_timing(fallback_chunks: list) -> str:
        """Batch-level branch: Google for the items that need it, else straight to subtitles."""
        return "google_align" if fallback_chunks else "render_subtitles"

    @task(map_index_template="{{ chunk_label }}")
    def google_align(chunk: dict) -> dict:
        """Time one fallback chunk with Google Speech-to-Text (word time offsets)."""
        from narration.align.google import GoogleAligner

        context = get_current_context()
        context["chunk_label"] = chunk["label"]
        s3, settings = storage(), core_settings()
        credentials = glue.google_credentials()
        aligner_cls = (lambda s: GoogleAligner(s, credentials=credentials)) if credentials else None
        result = align_chunk(s3, settings, load_chunk(s3, chunk["key"]), backend="google",
                             aligner_factory=aligner_cls)
        return result.model_dump(mode="json")

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, map_index_template="{{ chunk_label }}")
    def render_subtitles(chunk: dict, params=None) -> dict:
        """Pick each item's final timings and write its subtitles and word files."""
        get_current_context()["chunk_label"] = chunk["label"]
        s3, settings = storage(), core_settings()
        fallback_unavailable = None if glue.google_configured(settings) else glue.GOOGLE_NOT_CONFIGURED
        result = render_chunk(s3, settings, load_chunk(s3, chunk["key"]), formats=params["formats"],
                              profile_name=params["subtitle_profile"],
                              vtt_word_timestamps=params["vtt_word_timestamps"],
                              fallback_unavailable=fallback_unavailable)
        return result.model_dump(mode="json")

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[BATCH_OUTPUTS], on_success_callback=notify_failures,
          on_failure_callback=notify_failures)
    def write_report():
        """Per-batch CSV and HTML report and summary with presigned URLs; accounts for every line."""
        glue.require_plan(get_current_context())
        batch_id = glue.batch_id_from_context(get_current_context())
        summary = write_batch_report(storage(), core_settings(), batch_id)
        for line in glue.format_summary(summary).splitlines():
            print(line)
        yield Metadata(BATCH_OUTPUTS, extra={
            "batch_id": batch_id, "report": summary["report_csv"], **{f"items_{k}": v for k, v in
                                                                       summary.get("by_status", {}).items()}})

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def finish_manifests() -> dict:
        """Move manifests to processed/, incomplete/ or failed/ as the report judged them."""
        glue.require_plan(get_current_context())
        batch_id = glue.batch_id_from_context(get_current_context())
        s3 = storage()
        outcomes = lifecycle.manifest_outcomes(s3, batch_id)
        return lifecycle.finish(s3, BatchLayout(batch_id).batch_id, outcomes)

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def watch_failures():
        """Fails the run when any task failed, even though the report and manifest moves still ran."""
        raise AirflowFailException("a task of this batch failed; the report accounts for the affected items")

    route = route_timing(fallback_chunks)
    google = google_align.expand(chunk=fallback_chunks)
    render = render_subtitles.expand(chunk=chunks)
    report = write_report()

    synthesize >> align >> fallback_chunks
    route >> [google, render]
    finished = finish_manifests()
    google >> render >> report >> finished
    [chunks, synthesize, align, fallback_chunks, route, google, render, report, finished] >> watch_failures()


narration_batch()
