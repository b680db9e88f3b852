"""Delivery encodings of an item's loudness-normalised master: the WAV master itself (24-bit PCM) and, chosen per
batch, MP3 and Ogg Opus through soundfile (libsndfile, no system package) or AAC in M4A through ffmpeg.

Each encoder reads the normalised master from a file and writes its target file block by block (resampling, where
the encoding wants 48 kHz, through a libsoxr stream), so an hour's programme is never held in memory.

One registry maps each encoding to its writer; :func:`encode` raises :class:`EncodingError` naming the valid ones.
numpy and soundfile load with the first encoding, so the DAG file can read the names at parse time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
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


# Samples encoded at a time: an hour's master is encoded from its file with a few MB in memory.
ENCODE_BLOCK_SAMPLES = 1 << 17


def _blocks(source: str, rate_out: int | None = None) -> Iterator[np.ndarray]:
    """The source file's float32 mono samples block by block, resampled to ``rate_out`` (libsoxr, streamed) when
    given and different."""
    import numpy as np
    import soundfile

    with soundfile.SoundFile(source) as audio:
        stream = None
        if rate_out is not None and rate_out != audio.samplerate:
            import soxr

            stream = soxr.ResampleStream(audio.samplerate, rate_out, 1, dtype="float32", quality="HQ")
        while True:
            block = audio.read(ENCODE_BLOCK_SAMPLES, dtype="float32", always_2d=True).mean(axis=1)
            last = len(block) < ENCODE_BLOCK_SAMPLES
            if stream is not None:
                block = stream.resample_chunk(np.ascontiguousarray(block), last=last)
            if len(block):
                yield block
            if last:
                return


def _soundfile_file(source: str, target: str, fmt: str, subtype: str, rate_out: int | None = None) -> None:
    import soundfile

    rate = rate_out or soundfile.info(source).samplerate
    with soundfile.SoundFile(target, "w", rate, 1, format=fmt, subtype=subtype) as out:
        for block in _blocks(source, rate_out):
            out.write(block)


def _wav(source: str, target: str) -> None:
    _soundfile_file(source, target, "WAV", "PCM_24")


def _mp3(source: str, target: str) -> None:
    _soundfile_file(source, target, "MP3", "MPEG_LAYER_III")


def _opus(source: str, target: str) -> None:
    _soundfile_file(source, target, "OGG", "OPUS", OPUS_RATE)


def _m4a(source: str, target: str) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise EncodingError("the m4a encoding (AAC) needs ffmpeg on PATH; choose mp3 or opus, or install ffmpeg")
    with tempfile.TemporaryDirectory(prefix="narration-m4a-") as tmp:
        resampled = os.path.join(tmp, "in.wav")
        _soundfile_file(source, resampled, "WAV", "PCM_24", AAC_RATE)
        proc = subprocess.run([ffmpeg, "-v", "error", "-y", "-i", resampled, "-c:a", "aac", "-b:a", AAC_BITRATE,
                               "-movflags", "+faststart", target], capture_output=True, text=True)
        if proc.returncode != 0:
            raise EncodingError(f"ffmpeg could not encode AAC: {proc.stderr.strip()[-300:]}")


class Encoding(NamedTuple):
    extension: str
    encoder: str  # what encodes it, for the delivery record; {libsndfile} is the installed library's version
    write: Callable[[str, str], None]  # (float WAV source file, target file), block by block


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


def encode_file(source: str, target: str, name: str) -> str:
    """Encode the audio file ``source`` (a float WAV, any rate) as ``name`` into ``target``, block by block."""
    if name not in ENCODINGS:
        raise EncodingError(f"unknown audio encoding {name!r}; valid: {', '.join(DELIVERY_ENCODINGS)}")
    ENCODINGS[name].write(source, target)
    return target


def encode(audio: np.ndarray, sample_rate: int, name: str) -> bytes:
    """Encode samples in memory (a short clip) through the same encoder as :func:`encode_file`."""
    import numpy as np
    import soundfile

    if name not in ENCODINGS:
        raise EncodingError(f"unknown audio encoding {name!r}; valid: {', '.join(DELIVERY_ENCODINGS)}")
    with tempfile.TemporaryDirectory(prefix="narration-encode-") as tmp:
        source, target = os.path.join(tmp, "in.wav"), os.path.join(tmp, f"out.{ENCODINGS[name].extension}")
        soundfile.write(source, np.asarray(audio, dtype=np.float32), sample_rate, subtype="FLOAT")
        encode_file(source, target, name)
        with open(target, "rb") as fh:
            return fh.read()


def encoder(name: str) -> str:
    """What encodes ``name`` here, versions included (the delivery record names it)."""
    import soundfile

    return ENCODINGS[name].encoder.format(libsndfile=soundfile.__libsndfile_version__)
