"""Delivery encodings of an item's loudness-normalised master: the WAV master itself (24-bit PCM) and, chosen per
batch, MP3 and Ogg Opus through soundfile (libsndfile, no system package) or AAC in M4A through ffmpeg.

One registry maps each encoding to its writer; :func:`encode` raises :class:`EncodingError` naming the valid ones.
numpy and soundfile load with the first encoding, so the DAG file can read the names at parse time.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from narration.errors import ItemFault

if TYPE_CHECKING:
    import numpy as np

OPUS_RATE = 48000  # libsndfile's Opus encoder takes 8, 12, 16, 24 or 48 kHz; 48 kHz is Opus's own rate
# AAC pads its last 1024-sample frame: at 48 kHz that is at most 21 ms, under a frame at 30 fps (at 22.05 kHz, 46 ms)
AAC_RATE = 48000
AAC_BITRATE = "128k"


class EncodingError(ItemFault, ValueError):
    """An unknown encoding, or one whose encoder is not installed here."""


def _soundfile_bytes(audio: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> bytes:
    import numpy as np
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _wav(audio: np.ndarray, sample_rate: int) -> bytes:
    return _soundfile_bytes(audio, sample_rate, "WAV", "PCM_24")


def _mp3(audio: np.ndarray, sample_rate: int) -> bytes:
    return _soundfile_bytes(audio, sample_rate, "MP3", "MPEG_LAYER_III")


def _opus(audio: np.ndarray, sample_rate: int) -> bytes:
    from narration.audio import resample

    return _soundfile_bytes(resample(audio, sample_rate, OPUS_RATE), OPUS_RATE, "OGG", "OPUS")


def _m4a(audio: np.ndarray, sample_rate: int) -> bytes:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise EncodingError("the m4a encoding (AAC) needs ffmpeg on PATH; choose mp3 or opus, or install ffmpeg")
    import soundfile

    from narration.audio import resample

    with tempfile.TemporaryDirectory(prefix="narration-m4a-") as tmp:
        source, target = os.path.join(tmp, "in.wav"), os.path.join(tmp, "out.m4a")
        soundfile.write(source, resample(audio, sample_rate, AAC_RATE), AAC_RATE, subtype="PCM_24")
        proc = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", source, "-c:a", "aac", "-b:a", AAC_BITRATE,
                               "-movflags", "+faststart", target], capture_output=True, text=True)
        if proc.returncode != 0:
            raise EncodingError(f"ffmpeg could not encode AAC: {proc.stderr.strip()[-300:]}")
        with open(target, "rb") as fh:
            return fh.read()


class Encoding(NamedTuple):
    extension: str
    encoder: str  # what encodes it, for the delivery record; {libsndfile} is the installed library's version
    write: Callable[[np.ndarray, int], bytes]


ENCODINGS: dict[str, Encoding] = {
    "wav": Encoding("wav", "libsndfile {libsndfile} (PCM 24-bit)", _wav),
    "mp3": Encoding("mp3", "libsndfile {libsndfile} (LAME)", _mp3),
    "opus": Encoding("opus", "libsndfile {libsndfile} (libopus, 48 kHz)", _opus),
    "m4a": Encoding("m4a", "ffmpeg (aac, 48 kHz)", _m4a),
}
DELIVERY_ENCODINGS = tuple(name for name in ENCODINGS if name != "wav")  # chosen per batch; the master always ships


def check_encodings(names: list[str]) -> list[str]:
    unknown = [name for name in names if name not in DELIVERY_ENCODINGS]
    if unknown:
        raise EncodingError(f"unknown audio encoding(s) {unknown}; valid: {', '.join(DELIVERY_ENCODINGS)}")
    return names


def encode(audio: np.ndarray, sample_rate: int, name: str) -> bytes:
    if name not in ENCODINGS:
        raise EncodingError(f"unknown audio encoding {name!r}; valid: {', '.join(DELIVERY_ENCODINGS)}")
    return ENCODINGS[name].write(audio, sample_rate)


def encoder(name: str) -> str:
    """What encodes ``name`` here, versions included (the delivery record names it)."""
    import soundfile

    return ENCODINGS[name].encoder.format(libsndfile=soundfile.__libsndfile_version__)
