"""
### Narration batch

Turns text manifests dropped under `incoming/` in the narration bucket into narrated audio, word timings,
subtitles and word-timing files (every registered output format) and a batch report with download links.

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

from airflow.sdk import Asset, Metadata, Param, TriggerRule, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from narration.align import ALIGNERS
from narration.encodings import DELIVERY_ENCODINGS
from narration.languages import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES
from narration.settings import Settings
from narration.subtitles import DEFAULT_PROFILE, FRAME_RATES, PROFILES
from narration.subtitles.formats import SUBTITLE_FORMATS
from narration.synth import SYNTHESIZERS
from operators.notify import FailedItemsWebhookNotifier, late_batch_deadline
from operators.pools import GPU_POOL
from operators.worker import WorkerOperator, chunk_time_budget

# Parsed by the dag-processor and again at every task start: import only airflow.sdk, the light operator modules
# and the core's registries here; the core library (pandas, numpy, boto3) is imported inside the tasks that use it.
# Named, not an s3:// URI: the bucket is configuration, and an s3 URI imports the Amazon provider at parse time.
BATCH_OUTPUTS = Asset("narration_batch_outputs")
FORMATS = list(SUBTITLE_FORMATS)
ENCODINGS = list(DELIVERY_ENCODINGS)
FPS_CHOICES = [None, *(int(rate) if rate.is_integer() else rate for rate in FRAME_RATES)]
notify_failures = FailedItemsWebhookNotifier()  # posts failed/quarantined items when a webhook URL is configured

PARAMS = {
    "manifest": Param(None, type=["null", "string"], title="Manifest key or prefix",
                      description="S3 key or prefix of the manifest(s) to narrate; empty takes everything under "
                                  "incoming/."),
    "voice": Param(None, type=["null", "string"], title="Default voice",
                   description="Voice for lines that name none; empty uses the configured default voice."),
    "language": Param(DEFAULT_LANGUAGE, type="string", enum=sorted(SUPPORTED_LANGUAGES), title="Default language"),
    "timing_method": Param("auto", type="string", enum=["auto", *ALIGNERS],
                           title="Timing method",
                           description="auto: the configured primary aligner with Google as fallback; google: "
                                       "every item timed by Google Speech-to-Text."),
    "synthesizer": Param("auto", type="string", enum=["auto", *SYNTHESIZERS], title="Synthesizer",
                         description="auto: the configured synthesizer (NARRATION_SYNTHESIZER)."),
    "chunk_size": Param(None, type=["null", "integer"], minimum=1, maximum=500, title="Items per chunk",
                        description="Items per worker invocation (each chunk loads its model once); empty uses "
                                    "NARRATION_CHUNK_SIZE."),
    "formats": Param(FORMATS, type="array", items={"type": "string", "enum": FORMATS}, uniqueItems=True,
                     examples=FORMATS, title="Output formats",
                     description="Subtitle and word-timing files written for every item; none: audio only."),
    "subtitle_profile": Param(DEFAULT_PROFILE, type="string", enum=list(PROFILES), title="Subtitle profile",
                              section="Advanced"),
    "subtitle_fps": Param(None, type=["null", "number"], enum=FPS_CHOICES,
                          title="Subtitle frame rate", section="Advanced",
                          description="Cue times snap to this frame rate; empty uses the profile's."),
    "vtt_word_timestamps": Param(False, type="boolean", title="Karaoke timestamps in WebVTT", section="Advanced"),
    "audio_encodings": Param(None, type=["null", "array"], items={"type": "string", "enum": ENCODINGS},
                             examples=ENCODINGS, uniqueItems=True, title="Audio encodings",
                             section="Audio", description="Encodings delivered beside the WAV master; empty uses "
                                                          "NARRATION_AUDIO_ENCODINGS."),
    "loudness_target_lufs": Param(None, type=["null", "number"], minimum=-60, maximum=-5, section="Audio",
                                  title="Loudness target (LUFS)",
                                  description="Integrated loudness every master is normalised to (EBU R128: -23, "
                                              "podcasts and web: -16); empty uses NARRATION_LOUDNESS_TARGET_LUFS."),
    "true_peak_ceiling_dbtp": Param(None, type=["null", "number"], minimum=-20, maximum=0, section="Audio",
                                    title="True-peak ceiling (dBTP)",
                                    description="Empty uses NARRATION_TRUE_PEAK_CEILING_DBTP."),
    "force_fallback": Param(None, type=["null", "array"], items={"type": "string"},
                            title="Items to re-time with Google", section="Advanced",
                            description="Item ids (one per line) routed to the fallback aligner whatever the "
                                        "primary does."),
    "force_rerender": Param(False, type="boolean", title="Redo finished items", section="Advanced",
                            description="Ignore outputs a previous run already produced for the same inputs."),
    "lexicons": Param(None, type=["null", "array"], items={"type": "string"}, title="Pronunciation lexicons",
                      description="Lexicon names (lexicons/<name>.pls or .csv, one per line) for every line; a "
                                  "line's own lexicons are searched first, and in each list the first lexicon "
                                  "with a word wins."),
}


def budget_chunk(context) -> None:
    """pre_execute of the TaskFlow chunk tasks: the mapped instance's UI label and the chunk's time budget."""
    chunk = context["task"].op_kwargs["chunk"]
    context["chunk_label"] = chunk["label"]
    context["task"].execution_timeout = chunk_time_budget(chunk)


SETTINGS = Settings()  # environment only: the nightly run's bounds


@dag(
    dag_id="narration_batch",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,
    params=PARAMS,
    doc_md=__doc__,
    tags=["narration", "tts", "subtitles"],
    dagrun_timeout=timedelta(hours=SETTINGS.batch_timeout_h),
    deadline=late_batch_deadline(timedelta(hours=SETTINGS.batch_deadline_h)) if SETTINGS.batch_deadline_h else None,
    default_args={"owner": "narration", "retries": 2, "retry_delay": timedelta(seconds=20),
                  "retry_exponential_backoff": 2.0, "max_retry_delay": timedelta(minutes=10),
                  "execution_timeout": timedelta(minutes=30)},
)
def narration_batch():
    @task
    def plan_batch(params=None) -> list[dict]:
        """Claim manifests, validate every line, quarantine bad ones, write chunk specs."""
        from operators import batch_tasks

        return batch_tasks.plan_batch(get_current_context(), params)

    @task_group(prefix_group_id=False)
    def narrate_chunk(chunk: dict):
        """One chunk's GPU work: its alignment starts as soon as its own synthesis ends, and takes a free pool
        slot before the next chunk's synthesis does (upstream weights), so chunks finish one by one."""
        synthesize = WorkerOperator(task_id="synthesize", step="synthesize", chunk=chunk, pool=GPU_POOL,
                                    map_index_template="{{ task.chunk.label }}", execution_timeout=None,
                                    weight_rule="upstream")
        align = WorkerOperator(task_id="align", step="align", chunk=chunk, pool=GPU_POOL,
                               map_index_template="{{ task.chunk.label }}", execution_timeout=None,
                               weight_rule="upstream", trigger_rule=TriggerRule.ALL_DONE)
        synthesize >> align

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def plan_fallback() -> list[dict]:
        """Find items whose primary timing failed and cut them into fallback chunks."""
        from operators import batch_tasks

        return batch_tasks.plan_fallback_for_run(get_current_context())

    @task.branch
    def route_timing(fallback_chunks: list) -> str:
        """Batch-level branch: Google for the items that need it, else straight to subtitles."""
        return "google_align" if fallback_chunks else "render_subtitles"

    @task(map_index_template="{{ chunk_label }}", pre_execute=budget_chunk, execution_timeout=None)
    def google_align(chunk: dict) -> dict:
        """Time one fallback chunk with Google Speech-to-Text (word time offsets)."""
        from operators import batch_tasks

        return batch_tasks.google_align_chunk(chunk)

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, map_index_template="{{ chunk_label }}",
          pre_execute=budget_chunk, execution_timeout=None)
    def render_subtitles(chunk: dict) -> dict:
        """Pick each item's final timings and write its subtitles and word files, as the chunk's choices say."""
        from operators import batch_tasks

        return batch_tasks.render_chunk_for_run(chunk)

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[BATCH_OUTPUTS], on_success_callback=notify_failures,
          on_failure_callback=notify_failures)
    def write_report():
        """Per-batch CSV and HTML report and summary with presigned URLs; accounts for every line."""
        from operators import batch_tasks

        summary = batch_tasks.write_report_for_run(get_current_context())
        yield Metadata(BATCH_OUTPUTS, extra={
            "batch_id": summary["batch_id"], "report": summary["report_csv"],
            **{f"items_{k}": v for k, v in summary.get("by_status", {}).items()}})

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def finish_manifests() -> dict:
        """Move manifests to processed/, incomplete/ or failed/ once the outputs are written."""
        from operators import batch_tasks

        return batch_tasks.finish_manifests_for_run(get_current_context())

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def watch_failures():
        """Fails the run when any task failed, even though the report and manifest moves still ran."""
        raise AirflowFailException("a task of this batch failed; the report accounts for the affected items")

    chunks = plan_batch()
    narrated = narrate_chunk.expand(chunk=chunks)
    fallback_chunks = plan_fallback()
    route = route_timing(fallback_chunks)
    google = google_align.expand(chunk=fallback_chunks)
    render = render_subtitles.expand(chunk=chunks)
    report = write_report()
    finished = finish_manifests()

    narrated >> fallback_chunks
    route >> [google, render]
    google >> render >> report >> finished
    [chunks, *narrated.children.values(), fallback_chunks, route, google, render, report, finished] >> watch_failures()


narration_batch()
