"""Delivery encodings of an item's loudness-normalised master: the WAV master itself (24-bit PCM) and, chosen per
batch, MP3 and Ogg Opus through soundfile (libsndfile, no system package) or AAC in M4A through ffmpeg.

One registry maps each encoding to its writer; :func:`encode` raises :class:`EncodingError` naming the valid ones.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable

import numpy as np
import soundfile

from narration.audio import resample
from narration.errors import ItemFault

OPUS_RATE = 48000  # libsndfile's Opus encoder takes 8, 12, 16, 24 or 48 kHz; 48 kHz is Opus's own rate
# AAC pads its last 1024-sample frame: at 48 kHz that is at most 21 ms, under a frame at 30 fps (at 22.05 kHz, 46 ms)
AAC_RATE = 48000
AAC_BITRATE = "128k"


class EncodingError(ItemFault, ValueError):
    """An unknown encoding, or one whose encoder is not installed here."""


def _soundfile_bytes(audio: np.ndarray, sample_rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, np.asarray(audio, dtype=np.float32), sample_rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _wav(audio: np.ndarray, sample_rate: int) -> bytes:
    return _soundfile_bytes(audio, sample_rate, "WAV", "PCM_24")


def _mp3(audio: np.ndarray, sample_rate: int) -> bytes:
    return _soundfile_bytes(audio, sample_rate, "MP3", "MPEG_LAYER_III")


def _opus(audio: np.ndarray, sample_rate: int) -> bytes:
    return _soundfile_bytes(resample(audio, sample_rate, OPUS_RATE), OPUS_RATE, "OGG", "OPUS")


def _m4a(audio: np.ndarray, sample_rate: int) -> bytes:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise EncodingError("the m4a encoding (AAC) needs ffmpeg on PATH; choose mp3 or opus, or install ffmpeg")
    with tempfile.TemporaryDirectory(prefix="narration-m4a-") as tmp:
        source, target = os.path.join(tmp, "in.wav"), os.path.join(tmp, "out.m4a")
        soundfile.write(source, resample(audio, sample_rate, AAC_RATE), AAC_RATE, subtype="PCM_24")
        proc = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", source, "-c:a", "aac", "-b:a", AAC_BITRATE,
                               "-movflags", "+faststart", target], capture_output=True, text=True)
        if proc.returncode != 0:
            raise EncodingError(f"ffmpeg could not encode AAC: {proc.stderr.strip()[-300:]}")
        with open(target, "rb") as fh:
            return fh.read()


# encoding -> (file extension, what encodes it, writer)
ENCODINGS: dict[str, tuple[str, str, Callable[[np.ndarray, int], bytes]]] = {
    "wav": ("wav", f"libsndfile {soundfile.__libsndfile_version__} (PCM 24-bit)", _wav),
    "mp3": ("mp3", f"libsndfile {soundfile.__libsndfile_version__} (LAME)", _mp3),
    "opus": ("opus", f"libsndfile {soundfile.__libsndfile_version__} (libopus, 48 kHz)", _opus),
    "m4a": ("m4a", "ffmpeg (aac, 48 kHz)", _m4a),
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
    return ENCODINGS[name][2](audio, sample_rate)
