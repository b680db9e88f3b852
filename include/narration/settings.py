"""One typed settings object for the core library, read from ``NARRATION_*`` environment variables.

Airflow-side code overlays Airflow Variables and connections on top; workers see plain environment.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from narration.align import DEFAULT_ALIGNER, LOW_CONFIDENCE_SCORES
from narration.languages import DEFAULT_LANGUAGE
from narration.synth import DEFAULT_SYNTHESIZER


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NARRATION_", extra="ignore")

    # Storage
    bucket: str = Field("narration", description="S3 bucket holding manifests, voices and outputs.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); None = AWS.")
    s3_region: str = "us-east-1"
    s3_public_endpoint_url: str | None = Field(
        None, description="Endpoint that presigned download links name, when people reach S3 at another address "
        "than the workers do (compose: http://localhost:9000 while workers use http://minio:9000).")
    incoming_prefix: str = "incoming/"
    presign_expiry_s: int = Field(7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    s3_outage_retry_s: float = Field(30.0, ge=0, description="How long an unreachable S3 is retried, with "
                                     "exponential backoff, before a step fails.")
    s3_preflight_retry_s: float = Field(10.0, ge=0, description="How long planning waits for an S3 that does "
                                        "not answer before it fails the run as misconfigured (no task retries).")
    s3_max_attempts: int = Field(8, ge=1, description="botocore retry attempts (adaptive backoff).")
    s3_concurrency: int = Field(8, ge=1, le=64, description="Items whose S3 reads and writes a task runs at once "
                                "(rendering, reports); 1 = one after another.")

    # Manifest validation
    max_text_chars: int = Field(100_000, ge=1, description="Longest text of one item, in characters; an item "
                                "over longform_min_chars is narrated as a long-form programme in segments.")
    max_items_per_batch: int = Field(5000, ge=1)
    max_manifest_bytes: int = Field(20 * 1024 * 1024, ge=1)
    default_voice: str = "narrator"
    default_language: str = DEFAULT_LANGUAGE

    # Work planning
    chunk_size: int = Field(16, ge=1, le=1000, description="Items per chunk (one model load each); a run's "
                            "chunk_size Param overrides it.")
    synthesizer: str = DEFAULT_SYNTHESIZER
    aligner: str = DEFAULT_ALIGNER

    # Long-form items (narration.longform): segmented synthesis, pauses that follow the text, their own chunks.
    longform_min_chars: int = Field(1000, ge=1, description="An item longer than this (or of several "
                                    "paragraphs, or with chapters) is a long item: synthesised in segments, "
                                    "given a chunk of its own.")
    pause_sentence_ms: int = Field(250, ge=0, le=10_000, description="Silence between two segments of a long "
                                   "item inside one paragraph.")
    pause_paragraph_ms: int = Field(700, ge=0, le=10_000, description="Silence at a paragraph break.")
    pause_chapter_ms: int = Field(1500, ge=0, le=20_000, description="Silence before a new chapter.")

    # Time bounds: a hung worker or a late batch must not hold GPU slots or go unnoticed.
    worker_timeout_base_s: float = Field(600.0, gt=0, description="Start-up allowance of one worker step on one "
                                         "chunk (process or container start, model load).")
    worker_timeout_per_item_s: float = Field(120.0, gt=0, description="Added to a step's time budget for each "
                                             "item of its chunk; the task is killed when the budget runs out.")
    worker_timeout_per_kchar_s: float = Field(120.0, gt=0, description="Added to the budget of a chunk holding "
                                              "a long item for each 1,000 characters of its text.")
    batch_timeout_h: float = Field(12.0, gt=0, description="A batch run still running after this long fails.")
    batch_deadline_h: float = Field(4.0, ge=0, description="A batch still running this long after it was "
                                    "queued raises the late-batch alert; 0 turns the alert off (needed under "
                                    "dag.test, which cannot run a DAG with a deadline in Airflow 3.3.2).")

    # Alignment quality gate: an item worse than this is routed to the fallback aligner.
    max_untimed_ratio: float = Field(0.2, ge=0, le=1)
    min_mean_score: float = Field(0.0, description="Backend-specific mean word score floor.")
    low_confidence_scores: dict[str, float] = Field(
        default_factory=lambda: dict(LOW_CONFIDENCE_SCORES),
        description="Per aligner: words scored below this are counted as low confidence (scores are backend-specific).",
    )

    # Audio delivery: every item's master is normalised to this loudness; the encodings ship beside it.
    loudness_target_lufs: float = Field(-23.0, ge=-60, le=-5, description="Integrated loudness (LUFS) of every "
                                        "delivered item: EBU R128 broadcast -23, web and podcasts about -16.")
    true_peak_ceiling_dbtp: float = Field(-1.0, ge=-20, le=0, description="True peak no delivered item exceeds.")
    audio_encodings: list[str] = Field(default_factory=list, description="Delivery encodings beside the WAV "
                                       "master: mp3, opus (soundfile) and m4a (AAC, needs ffmpeg).")

    @field_validator("audio_encodings")
    @classmethod
    def _known_encodings(cls, value: list[str]) -> list[str]:
        if not value:  # settings validate their defaults too: the DAG file reads Settings, keep numpy out of it
            return value
        from narration.encodings import check_encodings

        return check_encodings(value)

    # Batching on the model workers. Synthesis does not depend on it (each item keeps its own seed and noise);
    # batched alignment does (whole-item emission passes), so the aligner puts it in its cache key.
    synthesis_batch_size: int = Field(1, ge=1, le=64, description="Sentence groups of a chunk's items that the "
                                      "synthesizer generates in one model call (F5-TTS; grouped by voice and "
                                      "similar length); 1 = one at a time.")
    synthesis_batch_frames: int = Field(24000, ge=256, description="Memory cap of one batched synthesis call: "
                                        "batch size x longest padded length, in 10.7 ms mel frames (reference "
                                        "included); a batch that would exceed it is split.")
    alignment_batch_size: int = Field(1, ge=1, le=64, description="Items whose wav2vec2 emissions the aligner "
                                      "computes in one forward pass (WhisperX); 1 = one at a time.")
    alignment_batch_s: float = Field(480.0, gt=0, description="Memory cap of one batched emission pass: batch "
                                     "size x longest padded item, in seconds of 16 kHz audio.")

    # Model locations (a model cache volume in production)
    model_dir: str = Field("/models", description="Root of the local model cache.")
    device: str = Field("auto", description="cpu | cuda | auto")

    # Fallback timing
    google_endpoint: str | None = Field(None, description="host:port of a Speech-to-Text gRPC endpoint.")
    google_insecure: bool = Field(False, description="Plain-text gRPC channel (local endpoints only).")
    google_service_account_key: dict[str, Any] | None = Field(
        None, repr=False, exclude=True, description="A service-account key (its JSON) the Google aligner signs in "
        "with; the Airflow side takes it from the google_cloud_default connection. None: "
        "GOOGLE_APPLICATION_CREDENTIALS or the endpoint's own.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
