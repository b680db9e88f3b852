"""A local Speech-to-Text v1 gRPC endpoint (``google.cloud.speech.v1.Speech/Recognize``) for tests and demos.

It answers the real Google client with real word offsets: the request's phrase hints are the expected words, and
pocketsphinx finds the contiguous run of them spoken in the audio, timed and rounded to Google's 100 ms steps.
"""

from __future__ import annotations

import argparse
import collections
import io
import re
import signal
import threading
import wave
from concurrent import futures
from datetime import timedelta
from typing import Any

import grpc
import numpy as np
from google.cloud.speech_v1.types import cloud_speech
from typing_extensions import Self

from narration.audio import resample, rms_dbfs

SERVICE = "google.cloud.speech.v1.Speech"
SYNC_LIMIT_S = 60.0
SYNC_LIMIT_BYTES = 10 * 1024 * 1024
RESOLUTION_MS = 100
DECODER_RATE = 16000
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")
_FILLERS = {"<s>", "</s>", "<sil>"}


SILENCE_DBFS = -60.0


def _round_ms(ms: float) -> int:
    return round(ms / RESOLUTION_MS) * RESOLUTION_MS


class HintRecognizer:
    """Recognises which contiguous run of the hint words is spoken, with pocketsphinx word times.

    The whole hint is first force-aligned with the tuned CPU aligner; when the audio holds only part of it (a
    long recording split into requests), a grammar over every contiguous run of the hint finds the spoken part.
    """

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        from narration.align.pocketsphinx import PocketsphinxAligner
        from narration.settings import Settings

        self.aligner = PocketsphinxAligner(Settings())
        self.aligner.load()

        # dither: digital silence (exact zeros, as espeak makes) otherwise derails the acoustic scores; beams
        # wider than the defaults keep the right path alive through a minute of synthetic speech.
        self.decoder = Decoder(samprate=DECODER_RATE, lm=None, dither=True, seed=1, loglevel="FATAL",
                               beam=1e-60, pbeam=1e-60, wbeam=1e-50)
        self.lock = threading.Lock()

    def words(self, audio_16k: np.ndarray, hint_words: list[str]) -> list[tuple[str, int, int, float]]:
        """(word, start_ms, end_ms, posterior) for the hint words found in the audio; [] if none."""
        if not hint_words or len(audio_16k) == 0 or rms_dbfs(audio_16k) < SILENCE_DBFS:
            return []  # like the real service, silence recognises as nothing
        whole = self._align_whole(audio_16k, hint_words)
        if whole:
            return whole
        pcm = (np.clip(audio_16k, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        with self.lock:
            known = [w for w in hint_words if self._in_dictionary(w)]
            if not known:
                return []
            self.decoder.add_fsg("hints", self._span_grammar(known))
            self.decoder.activate_search("hints")
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            segments = self.decoder.seg()
            if segments is None:  # no path reached the grammar's end (e.g. audio cut inside a word)
                return []
            frame_ms = 1000 / self.decoder.config["frate"]
            return [
                (_ALTERNATE_PRONUNCIATION.sub("", s.word), int(s.start_frame * frame_ms),
                 int((s.end_frame + 1) * frame_ms), min(1.0, max(0.0, float(s.prob))))
                for s in segments
                if s.word not in _FILLERS and not s.word.startswith("[")
            ]

    def _align_whole(self, audio_16k: np.ndarray, hint_words: list[str]) -> list[tuple[str, int, int, float]]:
        from narration.align.base import AlignmentError
        from narration.schema import ScriptToken

        tokens = [ScriptToken(index=n, original=w, spoken=[w]) for n, w in enumerate(hint_words)]
        with self.lock:
            try:
                timed = self.aligner.align(audio_16k, DECODER_RATE, tokens, "en")
            except AlignmentError:
                return []
        return [(w.spoken, w.start_ms, w.end_ms, w.score if w.score is not None else 0.0) for w in timed if w.timed]

    def _in_dictionary(self, word: str) -> bool:
        """Like Google's phrase hints, names and rare words are learnt: they get a pronunciation if missing."""
        if self.decoder.lookup_word(word) is not None:
            return True
        try:
            from narration.align.pronounce import pronounce

            self.decoder.add_word(word, pronounce(word), True)
        except (ImportError, ValueError, RuntimeError):
            return False
        return self.decoder.lookup_word(word) is not None

    def _span_grammar(self, words: list[str]) -> Any:
        # States: 0 start, k after word k, n+1 final. Any word may begin or end the run (a split request holds
        # only part of the script), but the run itself follows the script's order.
        n = len(words)
        final = n + 1
        transitions = []
        for k, word in enumerate(words, start=1):
            transitions += [(0, k, 1.0 / n, word), (0, final, 1.0 / n, word)]
            if k > 1:
                transitions += [(k - 1, k, 0.5, word), (k - 1, final, 0.5, word)]
        return self.decoder.create_fsg("hints", 0, final, transitions)


class SpeechServicer:
    """The Recognize method, with Google's sync limits and injectable failures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures: collections.deque[tuple[grpc.StatusCode, str]] = collections.deque()
        self.calls = 0
        self.requests: list[cloud_speech.RecognizeRequest] = []
        self._recognizer: HintRecognizer | None = None

    @property
    def recognizer(self) -> HintRecognizer:
        with self.lock:
            if self._recognizer is None:
                self._recognizer = HintRecognizer()
            return self._recognizer

    def recognize(self, request: cloud_speech.RecognizeRequest, context: grpc.ServicerContext):
        with self.lock:
            self.calls += 1
            self.requests.append(request)
            failure = self.failures.popleft() if self.failures else None
        if failure is not None:
            context.abort(*failure)
        config = request.config
        content = request.audio.content
        if request.audio.uri:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this endpoint accepts inline audio content only")
        if len(content) > SYNC_LIMIT_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Request payload size exceeds the limit: {SYNC_LIMIT_BYTES} bytes.")
        if config.encoding != cloud_speech.RecognitionConfig.AudioEncoding.LINEAR16:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only LINEAR16 audio is supported here")
        audio, rate = _decode_linear16(content, config.sample_rate_hertz)
        if not 8000 <= rate <= 48000:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sample_rate_hertz {rate} must be in 8000-48000")
        if len(audio) / rate > SYNC_LIMIT_S:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Sync input too long. For audio longer than 1 min use LongRunningRecognize with a "
                          "'uri' parameter.")
        hints = [w.lower() for ctx in config.speech_contexts for phrase in ctx.phrases for w in phrase.split()]
        found = self.recognizer.words(resample(audio, rate, DECODER_RATE), hints)
        duration_ms = len(audio) * 1000 / rate
        response = cloud_speech.RecognizeResponse(total_billed_time=timedelta(seconds=int(np.ceil(duration_ms / 1000))))
        if found:
            words = []
            for word, start, end, posterior in found:
                info = cloud_speech.WordInfo(word=word)
                if config.enable_word_time_offsets:
                    start_ms = _round_ms(start)
                    info.start_time = timedelta(milliseconds=start_ms)
                    info.end_time = timedelta(milliseconds=max(_round_ms(end), start_ms + RESOLUTION_MS))
                if config.enable_word_confidence:
                    info.confidence = posterior
                words.append(info)
            alternative = cloud_speech.SpeechRecognitionAlternative(
                transcript=" ".join(w.word for w in words),
                confidence=float(np.mean([f[3] for f in found])),
                words=words,
            )
            response.results.append(
                cloud_speech.SpeechRecognitionResult(
                    alternatives=[alternative],
                    result_end_time=timedelta(milliseconds=_round_ms(duration_ms)),
                    language_code=config.language_code.lower(),
                )
            )
        return response


def _decode_linear16(content: bytes, sample_rate: int) -> tuple[np.ndarray, int]:
    """Raw 16-bit PCM, or a WAV file whose header gives the rate (as Google accepts)."""
    if content[:4] == b"RIFF":
        with wave.open(io.BytesIO(content), "rb") as w:
            rate, channels = w.getframerate(), w.getnchannels()
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return (samples.reshape(-1, channels).mean(axis=1) / 32768.0).astype(np.float32), rate
    usable = len(content) // 2 * 2
    return np.frombuffer(content[:usable], dtype="<i2").astype(np.float32) / 32768.0, sample_rate


class LocalSpeechServer:
    """A real gRPC server on ``host`` (random free port by default) serving Speech v1 Recognize.

    ``with LocalSpeechServer() as server:`` gives ``server.address`` (host:port) for the client;
    ``server.fail_next(grpc.StatusCode.UNAVAILABLE, times=2)`` makes the next calls fail; ``server.calls`` counts
    Recognize calls and ``server.requests`` keeps what they sent.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_workers: int = 4):
        self.servicer = SpeechServicer()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            # Let oversize audio reach the handler so it is refused the way Google refuses it.
            options=[("grpc.max_receive_message_length", 2 * SYNC_LIMIT_BYTES)],
        )
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Recognize": grpc.unary_unary_rpc_method_handler(
                self.servicer.recognize,
                request_deserializer=cloud_speech.RecognizeRequest.deserialize,
                response_serializer=cloud_speech.RecognizeResponse.serialize,
            ),
        })
        self.server.add_generic_rpc_handlers((handler,))
        self.host = host
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"could not bind a gRPC port on {host}:{port}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def calls(self) -> int:
        return self.servicer.calls

    @property
    def requests(self) -> list[cloud_speech.RecognizeRequest]:
        return list(self.servicer.requests)

    def fail_next(self, code: grpc.StatusCode, times: int = 1, message: str | None = None) -> None:
        """Answer the next ``times`` Recognize calls with ``code`` instead of a result."""
        with self.servicer.lock:
            for _ in range(times):
                self.servicer.failures.append((code, message or f"injected {code.name}"))

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace)

    def wait(self) -> None:
        self.server.wait_for_termination()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    server = LocalSpeechServer(args.host, args.port).start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=2))
    print(f"speech-to-text endpoint listening on {server.address}", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop(grace=2)


if __name__ == "__main__":
    main()
