"""Google Speech-to-Text fallback timing, driven through the real client over a real gRPC channel.

The peer is ``narration.dev.speech_server``: a gRPC server on 127.0.0.1 that computes word offsets from the audio it
receives (pocketsphinx), so timings are checked against espeak-ng's exact word onsets.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import grpc
import numpy as np
import pytest

from narration.align import get_aligner_class
from narration.align.base import AlignmentError
from narration.align.google import (
    SYNC_LIMIT_S,
    GoogleAligner,
    RecognisedWord,
    is_configured,
    match_to_script,
    plan_segments,
)
from narration.dev.speech_server import LocalSpeechServer
from narration.normalize import normalize_script
from narration.settings import Settings
from narration.synth.base import Voice
from narration.synth.espeak import EspeakSynthesizer

SHORT_SCRIPT = "Dr. Smith paid $5.20 for 3 apples on May 4th, then walked home along the river."
LONG_SCRIPT = (
    "The harbour was quiet before dawn, and the fishing boats rocked gently against the old stone wall. "
    "Maria walked along the pier with a lantern, counting the nets that her father had mended the night before. "
    "By six o'clock the first buyers had arrived from the market in town, carrying baskets and talking about the "
    "weather. A storm was expected in the afternoon, so the captains decided to leave early and return before the "
    "wind grew strong. Children ran between the crates, laughing at the gulls that circled overhead in search of "
    "scraps. The baker opened his shop at seven, and the smell of fresh bread drifted down the narrow street to the "
    "water. Later that morning a small ship from the north entered the bay, its sails patched and faded by many "
    "long journeys. The sailors brought wool, salt and letters from distant cities, and everyone gathered to hear "
    "the news they carried. When the clouds finally came, the town was ready, and the boats were safely tied in "
    "the shelter of the harbour."
)


def speak(text: str, speed: float = 1.0):
    synth = EspeakSynthesizer(Settings())
    synth.load()
    tokens = normalize_script(text)
    return tokens, synth.synthesize(tokens, Voice("narrator", "en", text), speed=speed)


@pytest.fixture(scope="module")
def short_speech():
    return speak(SHORT_SCRIPT)


@pytest.fixture(scope="module")
def long_speech():
    # A slow narration of a long paragraph: over Google's one-minute sync limit.
    tokens, synthesis = speak(LONG_SCRIPT, speed=0.8)
    assert len(synthesis.audio) / synthesis.sample_rate > SYNC_LIMIT_S
    return tokens, synthesis


@pytest.fixture(scope="module")
def server():
    with LocalSpeechServer() as running:
        yield running


def make_aligner(server: LocalSpeechServer, **kwargs) -> GoogleAligner:
    settings = Settings(google_endpoint=server.address, google_insecure=True)
    aligner = GoogleAligner(settings, retry_initial_s=0.05, retry_maximum_s=0.2, **kwargs)
    aligner.load()
    return aligner


def onset_errors_ms(words, reference) -> list[int]:
    return [abs(w.start_ms - r.start_ms) for w, r in zip(words, reference) if w.timed]


def assert_google_shaped(words, tokens, audio_ms: float) -> None:
    assert [w.index for w in words] == [t.index for t in tokens]
    assert [w.text for w in words] == [t.original for t in tokens]
    assert {w.source for w in words} == {"google"}
    timed = [w for w in words if w.timed]
    for w in timed:
        assert w.start_ms % 100 == 0 and w.end_ms % 100 == 0, w
        assert 0 <= w.start_ms < w.end_ms <= audio_ms + 100, w
        assert w.score is not None and 0.0 < w.score <= 1.0
    starts = [w.start_ms for w in timed]
    assert starts == sorted(starts)


def test_registry_resolves_google():
    assert get_aligner_class("google") is GoogleAligner
    assert GoogleAligner.resolution_ms == 100


def test_word_timings_one_per_token_on_100ms_grid(server, short_speech):
    tokens, synthesis = short_speech
    aligner = make_aligner(server)
    calls_before = server.calls
    words = aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")
    aligner.close()

    assert server.calls - calls_before == 1
    audio_ms = 1000 * len(synthesis.audio) / synthesis.sample_rate
    assert_google_shaped(words, tokens, audio_ms)
    assert all(w.timed for w in words), [w.text for w in words if not w.timed]
    assert [w.text for w in words][:4] == ["Dr.", "Smith", "paid", "$5.20"]
    errors = onset_errors_ms(words, synthesis.reference_words)
    assert max(errors) <= 200 and np.mean(errors) <= 80, errors

    sent = server.requests[-1]
    assert sent.config.language_code == "en-US"
    assert sent.config.enable_word_time_offsets and sent.config.enable_word_confidence
    assert sent.config.sample_rate_hertz == synthesis.sample_rate
    hint = " ".join(sent.config.speech_contexts[0].phrases)
    assert hint.startswith("doctor smith paid five dollars twenty cents for three apples")


def test_long_audio_is_split_under_the_sync_limit_and_reoffset(server, long_speech):
    tokens, synthesis = long_speech
    aligner = make_aligner(server)  # the default 60 s limit
    calls_before = server.calls
    words = aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")

    sent = server.requests[calls_before:]
    seconds = [len(r.audio.content) / 2 / r.config.sample_rate_hertz for r in sent]
    assert len(sent) == 2 and max(seconds) <= SYNC_LIMIT_S
    assert sum(seconds) == pytest.approx(len(synthesis.audio) / synthesis.sample_rate, abs=1e-3)

    audio_ms = 1000 * len(synthesis.audio) / synthesis.sample_rate
    assert_google_shaped(words, tokens, audio_ms)
    assert sum(w.timed for w in words) >= 0.9 * len(tokens)
    errors = onset_errors_ms(words, synthesis.reference_words)
    assert np.mean(errors) <= 80 and np.percentile(errors, 95) <= 200
    # Words of the second request carry its offset: they are timed after the cut, where espeak spoke them.
    cut_ms = 1000 * seconds[0]
    late = [(w, r) for w, r in zip(words, synthesis.reference_words) if w.timed and r.start_ms > cut_ms + 500]
    assert len(late) > 5
    late_errors = [abs(w.start_ms - r.start_ms) for w, r in late]
    assert np.median(late_errors) <= 100 and max(late_errors) <= 1000, late_errors


def test_lower_split_limit_cuts_at_pauses(server, short_speech):
    tokens, synthesis = short_speech
    aligner = make_aligner(server, max_request_seconds=2.0)
    calls_before = server.calls
    words = aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")

    sent = server.requests[calls_before:]
    assert len(sent) >= 3
    assert all(len(r.audio.content) / 2 / r.config.sample_rate_hertz <= 2.0 for r in sent)
    audio_ms = 1000 * len(synthesis.audio) / synthesis.sample_rate
    assert_google_shaped(words, tokens, audio_ms)
    assert sum(w.timed for w in words) >= 0.8 * len(tokens)
    errors = onset_errors_ms(words, synthesis.reference_words)
    assert np.mean(errors) <= 100


def test_plan_segments_cuts_in_the_quietest_stretch():
    rate = 16000
    rng = np.random.default_rng(7)
    audio = rng.normal(0, 0.3, 25 * rate).astype(np.float32)
    audio[int(7.0 * rate) : int(7.6 * rate)] = 0.0  # the only pause in the last half of the first 10 s
    audio[int(16.5 * rate) : int(17.0 * rate)] *= 0.001
    segments = plan_segments(audio, rate, max_seconds=10.0)
    assert segments[0][0] == 0 and segments[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(segments))
    assert all(end - start <= 10 * rate for start, end in segments)
    cuts_s = [end / rate for _, end in segments[:-1]]
    assert 7.0 <= cuts_s[0] <= 7.6 and 16.5 <= cuts_s[1] <= 17.0
    assert plan_segments(audio[: 5 * rate], rate, 10.0) == [(0, 5 * rate)]


@pytest.mark.parametrize("status", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                    grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_transient_errors_are_retried(server, short_speech, status):
    tokens, synthesis = short_speech
    aligner = make_aligner(server)
    server.fail_next(status, times=2)
    calls_before = server.calls
    words = aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")
    assert server.calls - calls_before == 3
    assert sum(w.timed for w in words) >= 0.9 * len(tokens)


@pytest.mark.parametrize("status", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED])
def test_permanent_errors_raise_with_the_status(server, short_speech, status):
    tokens, synthesis = short_speech
    aligner = make_aligner(server)
    server.fail_next(status, message="the endpoint refused this")
    calls_before = server.calls
    with pytest.raises(AlignmentError, match=f"{status.name}: the endpoint refused this"):
        aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")
    assert server.calls - calls_before == 1  # not retried


def test_endpoint_refuses_sync_audio_over_a_minute(server, long_speech):
    tokens, synthesis = long_speech
    aligner = make_aligner(server, max_request_seconds=120.0)  # a client that does not split
    with pytest.raises(AlignmentError, match="INVALID_ARGUMENT: Sync input too long"):
        aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")


def test_retries_give_up_with_the_last_status(server, short_speech):
    tokens, synthesis = short_speech
    aligner = make_aligner(server, retry_timeout_s=0.5)
    server.fail_next(grpc.StatusCode.UNAVAILABLE, times=1000)
    try:
        with pytest.raises(AlignmentError, match="still failing after .* UNAVAILABLE"):
            aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")
    finally:
        server.servicer.failures.clear()


def test_unheard_tokens_stay_untimed_and_numbers_match_their_words():
    tokens = normalize_script("It cost $5 in 1999, said Zoe.")
    # What a recogniser might answer: digits for numbers, a missed name.
    heard = [RecognisedWord("it", 0, 200, 0.9), RecognisedWord("cost", 200, 500, 0.8),
             RecognisedWord("$5", 500, 1100, 0.7), RecognisedWord("in", 1100, 1200, 0.9),
             RecognisedWord("1999", 1200, 2100, None), RecognisedWord("said", 2100, 2400, 0.9)]
    words = match_to_script(tokens, heard, "google")
    assert [w.text for w in words] == ["It", "cost", "$5", "in", "1999,", "said", "Zoe."]
    assert [(w.start_ms, w.end_ms) for w in words[2:6]] == [(500, 1100), (1100, 1200), (1200, 2100), (2100, 2400)]
    assert words[4].score is None and words[2].score == pytest.approx(0.7)
    assert not words[6].timed and words[6].spoken == "zoe"


def test_nothing_recognised_is_an_alignment_error(server):
    tokens = normalize_script("Nobody says anything here.")
    aligner = make_aligner(server)
    silence = np.zeros(16000, dtype=np.float32)
    with pytest.raises(AlignmentError, match="matched none of the 4 script tokens"):
        aligner.align(silence, 16000, tokens, "en")


def test_is_configured(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    assert not is_configured(Settings(google_endpoint=None))
    assert is_configured(Settings(google_endpoint="127.0.0.1:50051"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/secrets/sa.json")
    assert is_configured(Settings(google_endpoint=None))


def test_server_runs_as_a_module(short_speech):
    tokens, synthesis = short_speech
    proc = subprocess.Popen([sys.executable, "-m", "narration.dev.speech_server", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line
        address = line.rsplit(" ", 1)[1].strip()
        aligner = GoogleAligner(Settings(google_endpoint=address, google_insecure=True))
        words = aligner.align(synthesis.audio, synthesis.sample_rate, tokens, "en")
        assert sum(w.timed for w in words) >= 0.9 * len(tokens)
        aligner.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_a_service_account_key_in_the_settings_signs_the_client_in(monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    account = {"type": "service_account", "project_id": "narration", "private_key_id": "k1", "private_key": pem,
               "client_email": "narration@narration.iam.gserviceaccount.com", "client_id": "1",
               "token_uri": "https://oauth2.googleapis.com/token"}
    settings = Settings(google_endpoint="127.0.0.1:9", google_service_account_key=account)
    assert "BEGIN PRIVATE KEY" not in repr(settings) and "google_service_account_key" not in settings.model_dump()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    assert is_configured(Settings(google_service_account_key=account)) and not is_configured(Settings())
    aligner = GoogleAligner(settings)
    aligner.load()
    try:
        assert aligner.credentials.service_account_email == account["client_email"]
    finally:
        aligner.close()
