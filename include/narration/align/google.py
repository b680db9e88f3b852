"""Fallback timing with Google Cloud Speech-to-Text v1: recognise with word offsets, map them onto the script.

Google's word offsets come in 100 ms steps (``resolution_ms = 100``), coarser than the primary aligners'; audio
over the sync limit (1 min / 10 MB) is split at quiet moments and each part's times offset back.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from narration.align.base import Aligner, AlignmentError
from narration.audio import resample
from narration.normalize import normalize_script
from narration.schema import ScriptToken, WordTiming
from narration.settings import Settings

SYNC_LIMIT_S = 60.0
SYNC_LIMIT_BYTES = 10 * 1024 * 1024
# Google's phrase-hint limits (v1): characters per phrase, phrases per request.
PHRASE_MAX_CHARS = 100
PHRASES_MAX = 5000
LANGUAGE_CODES = {
    "en": "en-US", "de": "de-DE", "fr": "fr-FR", "es": "es-ES", "it": "it-IT", "pt": "pt-BR", "nl": "nl-NL",
    "ja": "ja-JP", "zh": "cmn-Hans-CN", "ko": "ko-KR", "ru": "ru-RU", "pl": "pl-PL", "sv": "sv-SE",
}
TRANSIENT_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
# LINEAR16 rates Google accepts; anything else is resampled to 16 kHz.
MIN_RATE, MAX_RATE = 8000, 48000
GRPC_MESSAGE_LIMIT = SYNC_LIMIT_BYTES + 1024 * 1024


def is_configured(settings: Settings) -> bool:
    """True when a Speech-to-Text endpoint or Google credentials are available to this process."""
    return (bool(settings.google_endpoint) or bool(settings.google_service_account_key)
            or bool(os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")))


def language_code(language: str) -> str:
    """BCP-47 code Google expects ("en" -> "en-US"); already regional codes pass through."""
    return LANGUAGE_CODES.get(language.lower(), language)


@dataclass(frozen=True)
class RecognisedWord:
    word: str
    start_ms: int
    end_ms: int
    confidence: float | None


def plan_segments(audio: np.ndarray, sample_rate: int, max_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges of at most ``max_seconds`` each, cut at the quietest moment before each limit."""
    if max_seconds < 1.0:
        raise ValueError("segments must be allowed at least 1 s")
    max_samples = int(max_seconds * sample_rate)
    total = len(audio)
    hop = max(1, sample_rate // 100)  # 10 ms energy frames
    smooth = 20  # 200 ms: a pause, not a stop consonant
    segments: list[tuple[int, int]] = []
    start = 0
    while total - start > max_samples:
        # Search the last part of the allowed window for the lowest-energy 200 ms stretch.
        window = int(min(10.0, max_seconds / 2) * sample_rate)
        lo, hi = start + max_samples - window, start + max_samples
        frames = audio[lo:hi][: (hi - lo) // hop * hop].reshape(-1, hop)
        energy = np.mean(np.square(frames, dtype=np.float64), axis=1)
        if len(energy) > smooth:
            energy = np.convolve(energy, np.ones(smooth) / smooth, mode="valid")
            offset = smooth // 2
        else:
            offset = 0
        # Latest of the quietest frames keeps segments long (fewer requests).
        quietest = len(energy) - 1 - int(np.argmin(energy[::-1]))
        cut = lo + (quietest + offset) * hop
        # On Google's 100 ms grid, so re-offset word times stay multiples of 100 ms.
        step = sample_rate / 10
        cut = round(int(cut / step) * step)
        segments.append((start, cut))
        start = cut
    segments.append((start, total))
    return segments


def hint_phrases(tokens: list[ScriptToken]) -> list[str]:
    """The script's spoken words, in order, packed into phrases within Google's per-phrase limit."""
    phrases: list[str] = []
    current: list[str] = []
    for word in (w for t in tokens for w in t.spoken):
        if current and len(" ".join([*current, word])) > PHRASE_MAX_CHARS:
            phrases.append(" ".join(current))
            current = []
        current.append(word[:PHRASE_MAX_CHARS])
    if current:
        phrases.append(" ".join(current))
    return phrases[:PHRASES_MAX]


def match_to_script(tokens: list[ScriptToken], recognised: list[RecognisedWord], source: str) -> list[WordTiming]:
    """One WordTiming per script token: recognised words matched to the script's spoken words in order.

    Recognised words are normalised like the script ("5" -> "five") so that number formatting does not break
    the match; a token is timed from the words of it that were matched, and stays untimed if none were.
    """
    script_words = [(t.index, w) for t in tokens for w in t.spoken]
    heard: list[tuple[str, RecognisedWord]] = []
    for rec in recognised:
        for spoken_token in normalize_script(rec.word):
            heard.extend((w, rec) for w in spoken_token.spoken)
    matcher = difflib.SequenceMatcher(
        None, [w for _, w in script_words], [w for w, _ in heard], autojunk=False
    )
    matched: dict[int, list[RecognisedWord]] = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            token_index = script_words[block.a + k][0]
            matched.setdefault(token_index, []).append(heard[block.b + k][1])
    timings = []
    for token in tokens:
        words = matched.get(token.index, [])
        confidences = [w.confidence for w in words if w.confidence is not None]
        timings.append(WordTiming.of(token, min(w.start_ms for w in words) if words else None,
                                     max(w.end_ms for w in words) if words else None,
                                     sum(confidences) / len(confidences) if confidences else None, source=source))
    return timings


def _millis(duration: Any) -> int:
    """A proto Duration (timedelta through proto-plus) in whole milliseconds."""
    return round(duration.total_seconds() * 1000)


class GoogleAligner(Aligner):
    """Times a known script with Speech-to-Text v1 sync recognition (word offsets, word confidence)."""

    name = "google"
    resolution_ms = 100
    model = "speech-v1/default"

    def __init__(
        self,
        settings: Settings,
        *,
        credentials: Any = None,
        max_request_seconds: float = SYNC_LIMIT_S,
        retry_initial_s: float = 1.0,
        retry_maximum_s: float = 30.0,
        retry_timeout_s: float = 300.0,
        request_timeout_s: float = 120.0,
    ):
        super().__init__(settings)
        if max_request_seconds < 1.0:
            raise ValueError("max_request_seconds must be at least 1 s")
        self.credentials = credentials
        self.max_request_seconds = max_request_seconds
        self.retry_initial_s = retry_initial_s
        self.retry_maximum_s = retry_maximum_s
        self.retry_timeout_s = retry_timeout_s
        self.request_timeout_s = request_timeout_s
        self.client = None

    def load(self) -> None:
        import grpc
        from google.api_core.client_options import ClientOptions
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import speech_v1
        from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

        if self.credentials is None and self.settings.google_service_account_key:
            from google.oauth2 import service_account

            self.credentials = service_account.Credentials.from_service_account_info(
                self.settings.google_service_account_key, scopes=["https://www.googleapis.com/auth/cloud-platform"])
        endpoint = self.settings.google_endpoint
        try:
            if endpoint and self.settings.google_insecure:
                channel = grpc.insecure_channel(
                    endpoint, options=[("grpc.max_send_message_length", GRPC_MESSAGE_LIMIT)]
                )
                self.client = speech_v1.SpeechClient(transport=SpeechGrpcTransport(channel=channel))
            elif endpoint:
                self.client = speech_v1.SpeechClient(
                    credentials=self.credentials, client_options=ClientOptions(api_endpoint=endpoint)
                )
            else:
                # Credentials come from GOOGLE_APPLICATION_CREDENTIALS when none are passed in.
                self.client = speech_v1.SpeechClient(credentials=self.credentials)
        except DefaultCredentialsError as exc:
            raise AlignmentError(f"Google Speech-to-Text is not configured: {exc}") from exc

    def close(self) -> None:
        if self.client is not None:
            self.client.transport.close()
            self.client = None

    def align(
        self, audio: np.ndarray, sample_rate: int, tokens: list[ScriptToken], language: str
    ) -> list[WordTiming]:
        if not tokens:
            return []
        if len(audio) == 0:
            raise AlignmentError("empty audio")
        if self.client is None:
            self.load()
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            audio, sample_rate = resample(audio, sample_rate, 16000), 16000
        pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
        # 16-bit samples: the byte limit may be the tighter one at high rates.
        max_seconds = min(self.max_request_seconds, (SYNC_LIMIT_BYTES // 2) / sample_rate)
        recognised: list[RecognisedWord] = []
        phrases = hint_phrases(tokens)
        for start, end in plan_segments(audio, sample_rate, max_seconds):
            offset_ms = round(start * 1000 / sample_rate)
            for word in self._recognize(pcm[start:end].tobytes(), sample_rate, language, phrases):
                recognised.append(
                    RecognisedWord(word.word, word.start_ms + offset_ms, word.end_ms + offset_ms, word.confidence)
                )
        timings = match_to_script(tokens, recognised, self.name)
        if not any(t.timed for t in timings):
            raise AlignmentError(
                f"Google Speech-to-Text matched none of the {len(tokens)} script tokens "
                f"({len(recognised)} words recognised)"
            )
        return timings

    def _recognize(self, pcm: bytes, sample_rate: int, language: str, phrases: list[str]) -> list[RecognisedWord]:
        from google.api_core import exceptions as api_exceptions
        from google.api_core.retry import Retry
        from google.cloud.speech_v1 import RecognitionAudio, RecognitionConfig, SpeechContext

        config = RecognitionConfig(
            encoding=RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=sample_rate,
            language_code=language_code(language),
            enable_word_time_offsets=True,
            enable_word_confidence=True,
            speech_contexts=[SpeechContext(phrases=phrases)],
        )
        retry = Retry(
            predicate=_is_transient,
            initial=self.retry_initial_s,
            maximum=self.retry_maximum_s,
            multiplier=2.0,
            timeout=self.retry_timeout_s,
        )
        try:
            response = self.client.recognize(
                config=config, audio=RecognitionAudio(content=pcm), retry=retry, timeout=self.request_timeout_s
            )
        except api_exceptions.RetryError as exc:
            raise AlignmentError(
                f"Google Speech-to-Text still failing after {self.retry_timeout_s:g} s of retries: "
                f"{_describe(exc.cause)}"
            ) from exc
        except api_exceptions.GoogleAPICallError as exc:
            raise AlignmentError(f"Google Speech-to-Text rejected the request: {_describe(exc)}") from exc
        words = []
        for result in response.results:
            if not result.alternatives:
                continue
            # Word offsets and confidences come on the first (best) alternative only.
            for info in result.alternatives[0].words:
                words.append(
                    RecognisedWord(
                        info.word,
                        _millis(info.start_time),
                        _millis(info.end_time),
                        # 0.0 is Google's "not set" sentinel.
                        info.confidence or None,
                    )
                )
        return words


def _status_name(exc: BaseException | None) -> str | None:
    code = getattr(exc, "grpc_status_code", None)
    return code.name if code is not None else None


def _is_transient(exc: BaseException) -> bool:
    return _status_name(exc) in TRANSIENT_STATUS


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no response"
    status = _status_name(exc) or type(exc).__name__
    message = getattr(exc, "message", None) or str(exc)
    return f"{status}: {message}"
