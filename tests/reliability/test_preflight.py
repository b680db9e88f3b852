"""Configuration checks at planning against the real S3 server: each mistake names the setting, where its value
came from and the valid values, and an S3 that does not answer is given up on within the preflight window."""

from __future__ import annotations

import socket
import time

import pytest

from narration.plan import BatchOptions
from narration.preflight import ConfigurationError, Source, check_configuration
from narration.settings import Settings
from narration.storage import Storage, make_client


def test_a_sound_configuration_passes_and_leaves_no_trace(storage):
    check_configuration(storage, BatchOptions(), "b1", google_configured=False)
    assert list(storage.list_keys("")) == [], "the write probe is deleted again"


def test_an_unknown_backend_is_named_with_its_variable_and_the_valid_names(storage, monkeypatch):
    monkeypatch.setenv("NARRATION_SYNTHESIZER", "bogus")
    with pytest.raises(ConfigurationError, match=r"^NARRATION_SYNTHESIZER \(from environment\): unknown "
                                                 r"synthesizer 'bogus'; valid values: espeak, f5tts, piper$"):
        check_configuration(storage, BatchOptions(synthesizer="bogus"), "b1", google_configured=False)
    with pytest.raises(ConfigurationError, match=r"^NARRATION_ALIGNER \(from its default\): unknown primary aligner "
                                                 r"'sphinx'; valid values: pocketsphinx, whisperx$"):
        check_configuration(storage, BatchOptions(aligner="sphinx"), "b1", google_configured=False)
    assert list(storage.list_keys("")) == [], "nothing is written before the backends check out"


def test_timing_with_google_needs_google_configured(storage):
    options = BatchOptions(timing_method="google")
    with pytest.raises(ConfigurationError, match=r"timing_method \(from Param\): 'google' .* not configured "
                                                 r"\(set NARRATION_GOOGLE_ENDPOINT"):
        check_configuration(storage, options, "b1", google_configured=False,
                            sources={"timing_method": Source("timing_method", "Param")})
    check_configuration(storage, options, "b1", google_configured=True)


def test_a_missing_bucket_lists_the_buckets_there_are(storage):
    missing = Storage.from_settings(Settings(bucket="nowhere-to-be-found"))
    with pytest.raises(ConfigurationError, match=r"NARRATION_BUCKET \(from environment\): bucket "
                                                 r"'nowhere-to-be-found' does not exist at S3 at http://127\.0\.0\.1:"
                                                 rf"\d+; valid values: .*{storage.bucket}"):
        check_configuration(missing, BatchOptions(), "b1", google_configured=False)


def test_an_endpoint_that_does_not_answer_fails_within_the_preflight_window(storage):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(s3_endpoint_url=f"http://127.0.0.1:{port}", s3_max_attempts=2)
    unreachable = Storage(storage.bucket, make_client(settings), settings, outage_retry_s=2.0)
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=rf"NARRATION_S3_ENDPOINT_URL \(from .*\): S3 at http://127\.0\.0\.1:"
                                                 rf"{port} did not answer within 2 s: a wrong endpoint, or S3 is down"):
        check_configuration(unreachable, BatchOptions(), "b1", google_configured=False)
    assert time.monotonic() - started < 10


def test_a_batch_lexicon_that_is_missing_or_malformed_is_named_with_its_line(storage):
    storage.put_bytes("lexicons/names.csv", b"grapheme,alias\nSQL,sequel\nNguyen,\n")
    with pytest.raises(ConfigurationError) as caught:
        check_configuration(storage, BatchOptions(lexicons=["names"]), "b", google_configured=True,
                            sources={"lexicons": Source("lexicons", "Param")})
    assert str(caught.value) == (f"lexicons (from Param): {storage.uri('lexicons/names.csv')}:3: entry 'Nguyen': "
                                 "the entry has neither an alias nor a phoneme")
    with pytest.raises(ConfigurationError, match=r"^lexicons \(from batch options\): ghost: no lexicon 'ghost' in "):
        check_configuration(storage, BatchOptions(lexicons=["ghost"]), "b", google_configured=True)


def test_the_airflow_side_names_params_and_the_connection_as_sources():
    from operators.batch_tasks import setting_sources

    chosen = setting_sources({"synthesizer": "f5tts", "timing_method": "whisperx"}, environ={})
    assert (chosen["synthesizer"], chosen["aligner"]) == (Source("synthesizer", "Param"),
                                                          Source("timing_method", "Param"))
    assert chosen["endpoint"] == Source("endpoint_url", "the extra of connection aws_default")
    defaults = setting_sources({"synthesizer": "auto"}, environ={"NARRATION_SYNTHESIZER": "bogus",
                                                                 "NARRATION_S3_ENDPOINT_URL": "http://x"})
    assert defaults["synthesizer"] == Source("NARRATION_SYNTHESIZER", "environment")
    assert defaults["endpoint"] == Source("NARRATION_S3_ENDPOINT_URL", "environment")
