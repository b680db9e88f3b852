"""Audio helpers: 16-bit PCM WAV in and out of memory, resampling, duration.

The synthesizer's native-rate master is what ships; aligners resample their own copy (WhisperX and
pocketsphinx want 16 kHz).
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from math import gcd

import numpy as np


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


# Enough of a WAV file to hold its RIFF, fmt and data chunk headers (ours are 44 bytes).
WAV_HEADER_BYTES = 4096


@dataclass(frozen=True)
class WavHeader:
    """What a PCM WAV file's header states, and where its samples start."""

    sample_rate: int
    channels: int
    sample_width: int
    frames: int
    data_offset: int

    @property
    def seconds(self) -> float:
        return self.frames / float(self.sample_rate)

    def frames_present(self, size: int) -> int:
        """Whole frames a file of ``size`` bytes really holds (fewer than ``frames`` when it was cut short)."""
        return max(0, min(self.frames, (size - self.data_offset) // (self.channels * self.sample_width)))


def read_wav_header(prefix: bytes) -> WavHeader:
    """Parse the RIFF/WAVE, fmt and data chunk headers from the first bytes of a file (no samples needed)."""
    if len(prefix) < 12 or prefix[:4] != b"RIFF" or prefix[8:12] != b"WAVE":
        raise AudioError(f"not a PCM WAV file: no RIFF/WAVE header ({len(prefix)} byte(s) read)")
    fmt = None
    position = 12
    while position + 8 <= len(prefix):
        chunk_id, size = prefix[position:position + 4], struct.unpack("<I", prefix[position + 4:position + 8])[0]
        body = position + 8
        if chunk_id == b"fmt ":
            if body + 16 > len(prefix):
                break
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", prefix[body:body + 16])
            if tag not in (1, 0xFFFE) or not channels or not rate or bits not in (8, 16, 32):
                raise AudioError(f"not a PCM WAV file: format {tag}, {channels} channel(s), {rate} Hz, {bits} bits")
            fmt = channels, rate, bits // 8
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioError("not a PCM WAV file: data chunk before the fmt chunk")
            channels, rate, width = fmt
            return WavHeader(sample_rate=rate, channels=channels, sample_width=width,
                             frames=size // (channels * width), data_offset=body)
        position = body + size + (size & 1)
    raise AudioError(f"not a PCM WAV file: no fmt and data chunk headers in its first {len(prefix)} byte(s)")


def wav_problem(prefix: bytes, size: int, *, sample_rate: int | None = None, seconds: float | None = None
                ) -> str | None:
    """Why a WAV file of ``size`` bytes starting with ``prefix`` is not the audio its record describes, or None.

    Checks that it parses, holds every frame its header states, and has the record's rate and length."""
    try:
        header = read_wav_header(prefix)
    except AudioError as exc:
        return str(exc)
    present = header.frames_present(size)
    if present < header.frames:
        return truncation(header.frames, present)
    if sample_rate is not None and header.sample_rate != sample_rate:
        return f"sample rate {header.sample_rate} Hz, its record states {sample_rate} Hz"
    # Records round the length to 1 ms.
    if seconds is not None and abs(header.seconds - seconds) > 0.0005 + 1.0 / header.sample_rate:
        return f"{header.seconds:.3f} s of audio, its record states {seconds:.3f} s"
    return None


def truncation(declared: int, present: int) -> str:
    return f"truncated WAV: its header states {declared:,} frames, {present:,} present"


def from_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Decode PCM WAV (8/16/32-bit, any channel count) to float32 mono; a file cut short is an error."""
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError, struct.error) as exc:
        raise AudioError(f"not a PCM WAV file: {exc or 'its header is cut short'}") from exc
    if len(raw) < frames * channels * width:
        raise AudioError(truncation(frames, len(raw) // (channels * width)))
    if width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise AudioError(f"unsupported sample width {width * 8} bits")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples, rate


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    g = gcd(rate_in, rate_out)
    return resample_poly(audio, rate_out // g, rate_in // g).astype(np.float32)


def duration_s(audio: np.ndarray, sample_rate: int) -> float:
    return len(audio) / float(sample_rate)


def rms_dbfs(audio: np.ndarray) -> float:
    if len(audio) == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
