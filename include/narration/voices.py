"""The voice library in S3: reference audio (at most 12 s) with its transcript and metadata, one prefix a voice.

F5-TTS clones the reference; the espeak-ng default uses the ``espeak_voice`` named in the metadata.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from narration import audio as audio_io
from narration.layout import VOICES, voice_meta_key, voice_reference_key
from narration.manifests import ID_PATTERN
from narration.storage import Storage
from narration.synth.base import Voice

MAX_REFERENCE_S = 12.0  # F5-TTS clips the reference audio at 12 s but not its transcript
MIN_REFERENCE_S = 1.0
MIN_REFERENCE_DBFS = -50.0


class VoiceError(ValueError):
    """A reference voice that cannot be used, with the reason."""


class VoiceInfo(BaseModel):
    voice_id: str
    language: str = "en"
    transcript: str
    sample_rate: int
    duration_s: float
    loudness_dbfs: float
    espeak_voice: str = "en-us"
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    extra: dict = Field(default_factory=dict)


def validate_reference(voice_id: str, wav: bytes, transcript: str) -> tuple[int, float, float]:
    """Check a reference recording; returns (sample_rate, duration_s, loudness_dbfs) or raises VoiceError."""
    if not ID_PATTERN.match(voice_id) or ".." in voice_id:
        raise VoiceError(f"voice id {voice_id!r} must be letters, digits, '.', '_' or '-' (no '..', no '/')")
    if not transcript or not transcript.strip():
        raise VoiceError(f"voice {voice_id!r}: the reference transcript is empty (F5-TTS needs the spoken text)")
    try:
        samples, rate = audio_io.from_wav_bytes(wav)
    except audio_io.AudioError as exc:
        raise VoiceError(f"voice {voice_id!r}: reference is not usable audio: {exc}") from exc
    duration = audio_io.duration_s(samples, rate)
    if duration > MAX_REFERENCE_S:
        raise VoiceError(f"voice {voice_id!r}: reference is {duration:.1f} s, over the {MAX_REFERENCE_S:.0f} s limit")
    if duration < MIN_REFERENCE_S:
        raise VoiceError(f"voice {voice_id!r}: reference is {duration:.2f} s, under the {MIN_REFERENCE_S:.0f} s minimum")
    loudness = audio_io.rms_dbfs(samples)
    if loudness < MIN_REFERENCE_DBFS:
        raise VoiceError(f"voice {voice_id!r}: reference is silent ({loudness:.0f} dBFS)")
    return rate, duration, loudness


def upload_voice(
    storage: Storage, voice_id: str, wav: bytes, transcript: str, *, language: str = "en",
    espeak_voice: str = "en-us", extra: dict | None = None,
) -> VoiceInfo:
    rate, duration, loudness = validate_reference(voice_id, wav, transcript)
    info = VoiceInfo(voice_id=voice_id, language=language, transcript=transcript.strip(), sample_rate=rate,
                     duration_s=round(duration, 3), loudness_dbfs=round(loudness, 1), espeak_voice=espeak_voice,
                     extra=extra or {})
    storage.put_bytes(voice_reference_key(voice_id), wav)
    storage.put_json(voice_meta_key(voice_id), info)  # metadata last: its presence means the voice is complete
    return info


def list_voices(storage: Storage) -> list[VoiceInfo]:
    voices = []
    for key in storage.list_keys(VOICES):
        if key.endswith("/voice.json"):
            voices.append(VoiceInfo.model_validate(storage.get_json(key)))
    return sorted(voices, key=lambda v: v.voice_id)


def voice_ids(storage: Storage) -> set[str]:
    return {v.voice_id for v in list_voices(storage)}


def get_voice_info(storage: Storage, voice_id: str) -> VoiceInfo:
    try:
        return VoiceInfo.model_validate(storage.get_json(voice_meta_key(voice_id)))
    except KeyError:
        raise VoiceError(f"unknown voice {voice_id!r}") from None


def materialise_voice(storage: Storage, voice_id: str, directory: str) -> Voice:
    """Download a voice's reference into ``directory`` for a worker's synthesizer."""
    info = get_voice_info(storage, voice_id)
    path = os.path.join(directory, f"{info.voice_id}.wav")
    if not os.path.exists(path):
        storage.download_file(voice_reference_key(voice_id), path)
    return Voice(voice_id=info.voice_id, language=info.language, transcript=info.transcript, reference_path=path,
                 metadata={"espeak_voice": info.espeak_voice, **info.extra})


def delete_voice(storage: Storage, voice_id: str) -> None:
    get_voice_info(storage, voice_id)
    storage.delete(voice_meta_key(voice_id))
    storage.delete(voice_reference_key(voice_id))
