"""Audio helpers: WAV in and out of memory (read through soundfile: any PCM width, float, FLAC), block readers over
an array or a WAV file (a long master is processed without decoding it whole), resampling, duration.

The synthesizer's native-rate take is what is timed; aligners resample their own copy (WhisperX and
pocketsphinx want 16 kHz).
"""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import soundfile

from narration.errors import ItemFault

# Lossless containers accepted as input audio (references, masters); lossy ones (MP3, Ogg) are refused.
LOSSLESS_FORMATS = {"WAV", "WAVEX", "RF64", "W64", "FLAC", "AIFF"}


class AudioError(ItemFault, ValueError):
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
            if tag not in (1, 3, 0xFFFE) or not channels or not rate or bits not in (8, 16, 24, 32, 64):
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
    if info.format in ("WAV", "WAVEX"):  # libsndfile reads a file cut short without a word: say it is truncated
        header = read_wav_header(data[:WAV_HEADER_BYTES])
        if header.frames_present(len(data)) < header.frames:
            raise AudioError(truncation(header.frames, header.frames_present(len(data))))
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    return DecodedAudio(np.ascontiguousarray(mono, dtype=np.float32), int(rate), samples.shape[1], info.format,
                        info.subtype)


def from_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """Decode lossless audio (see :func:`decode_audio`) to (float32 mono samples, sample rate)."""
    decoded = decode_audio(data)
    return decoded.samples, decoded.sample_rate


class SampleReader(Protocol):
    """A mono signal read by ranges: float64 samples [start, stop) of ``frames`` at ``sample_rate``."""

    frames: int
    sample_rate: int

    def read(self, start: int, stop: int) -> np.ndarray: ...


class ArrayReader:
    """A :class:`SampleReader` over samples in memory."""

    def __init__(self, samples: np.ndarray, sample_rate: int):
        self._samples = np.asarray(samples).ravel()
        self.frames, self.sample_rate = len(self._samples), int(sample_rate)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._samples[start:stop], dtype=np.float64)


class WavFileReader:
    """A :class:`SampleReader` over a lossless audio file on disk (channels averaged, like :func:`decode_audio`);
    only the range asked for is decoded. Use it as a context manager."""

    def __init__(self, path: str):
        try:
            self._file = soundfile.SoundFile(path)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioError(f"not a readable WAV or FLAC file: {exc}") from exc
        try:
            if self._file.format not in LOSSLESS_FORMATS:
                raise AudioError(f"{self._file.format} audio is not accepted; use WAV or FLAC")
            if self._file.samplerate <= 0 or self._file.frames == 0:
                raise AudioError("the file holds no audio samples")
            if self._file.format in ("WAV", "WAVEX"):  # libsndfile reads a file cut short without a word
                with open(path, "rb") as fh:
                    header = read_wav_header(fh.read(WAV_HEADER_BYTES))
                    size = fh.seek(0, 2)
                if header.frames_present(size) < header.frames:
                    raise AudioError(truncation(header.frames, header.frames_present(size)))
        except BaseException:
            self._file.close()
            raise
        self.frames, self.sample_rate = int(self._file.frames), int(self._file.samplerate)
        self.channels = self._file.channels

    def read(self, start: int, stop: int) -> np.ndarray:
        self._file.seek(start)
        samples = self._file.read(max(0, stop - start), dtype="float64", always_2d=True)
        return samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]

    def blocks(self, size: int):
        """(start, samples) over the whole file, ``size`` samples at a time."""
        for start in range(0, self.frames, size):
            yield start, self.read(start, min(self.frames, start + size))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> WavFileReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
