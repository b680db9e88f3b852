"""Audio helpers: WAV in and out of memory (read through soundfile: any PCM width, float, FLAC), resampling,
duration.

The synthesizer's native-rate take is what is timed; aligners resample their own copy (WhisperX and
pocketsphinx want 16 kHz).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import soundfile

# Lossless containers accepted as input audio (references, masters); lossy ones (MP3, Ogg) are refused.
LOSSLESS_FORMATS = {"WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF"}


class AudioError(ValueError):
    """Bytes that are not usable audio (not WAV, empty, unsupported encoding)."""


def to_wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    pcm = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes((pcm * 32767.0).astype("<i2").tobytes())
    return buf.getvalue()


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples and what the file was (``FLAC``/``PCM_24``, 2 channels before the down-mix)."""

    samples: np.ndarray
    sample_rate: int
    channels: int
    container: str
    subtype: str

    @property
    def description(self) -> str:
        layout = "mono" if self.channels == 1 else f"{self.channels} channels, down-mixed to mono"
        return f"{self.container} {self.subtype}, {self.sample_rate} Hz, {layout}"


def decode_audio(data: bytes) -> DecodedAudio:
    """Decode lossless audio (WAV of any PCM width or float, FLAC, AIFF) to float32 mono (channels averaged)."""
    try:
        info = soundfile.info(io.BytesIO(data))
        if info.format not in LOSSLESS_FORMATS:
            raise AudioError(f"{info.format} audio is not accepted; use WAV or FLAC")
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"not a readable WAV or FLAC file: {exc}") from exc
    if rate <= 0 or samples.shape[0] == 0:
        raise AudioError("the file holds no audio samples")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return DecodedAudio(np.ascontiguousarray(mono, dtype=np.float32), int(rate), samples.shape[1], info.format,
                        info.subtype)


def from_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Decode lossless audio (see :func:`decode_audio`) to (float32 mono samples, sample rate)."""
    decoded = decode_audio(data)
    return decoded.samples, decoded.sample_rate


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited sample-rate conversion with libsoxr (imports in milliseconds; scipy.signal took seconds)."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate_in == rate_out:
        return audio
    import soxr

    return soxr.resample(audio, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def duration_s(audio: np.ndarray, sample_rate: int) -> float:
    return len(audio) / float(sample_rate)


def rms_dbfs(audio: np.ndarray) -> float:
    if len(audio) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
