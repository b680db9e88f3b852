"""The voice library in S3: reference audio (at most 12 s) with its transcript and metadata, one prefix a voice.

F5-TTS clones the reference; the espeak-ng default uses the ``espeak_voice`` named in the metadata. These
functions are what the ``narration voices`` commands and the DAG call.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import datetime, timezone

from pydantic import BaseModel, Field

from narration import audio as audio_io
from narration.errors import ItemFault
from narration.languages import DEFAULT_LANGUAGE
from narration.layout import ID_PATTERN, VOICES, voice_meta_key, voice_reference_key
from narration.settings import Settings
from narration.storage import Storage
from narration.synth.base import Voice

MAX_REFERENCE_S = 12.0  # F5-TTS clips the reference audio at 12 s but not its transcript
MIN_REFERENCE_S = 1.0
MIN_REFERENCE_DBFS = -50.0
MIN_SAMPLE_RATE = 16000  # F5-TTS works at 24 kHz; narrow-band (8 kHz telephone) references clone badly
TRANSCRIPT_GIVEN = "given"


class VoiceError(ItemFault, ValueError):
    """A reference voice that cannot be used, with the reason."""


class VoiceInfo(BaseModel):
    voice_id: str
    language: str = DEFAULT_LANGUAGE
    transcript: str
    sample_rate: int
    duration_s: float
    loudness_dbfs: float
    espeak_voice: str = "en-us"
    transcript_source: str = Field(TRANSCRIPT_GIVEN, description="'given', or 'asr:<model>' when transcribed.")
    source_audio: str | None = Field(None, description="What was uploaded (container, sample format, rate, "
                                     "channels); the library stores it as mono 16-bit WAV.")
    downmixed_from_channels: int | None = Field(None, description="Channels averaged into the mono reference.")
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    extra: dict = Field(default_factory=dict)


def validate_voice_id(voice_id: str) -> None:
    if not ID_PATTERN.match(voice_id) or ".." in voice_id:
        raise VoiceError(f"voice id {voice_id!r} must be letters, digits, '.', '_' or '-' (no '..', no '/')")


def decode_reference(voice_id: str, data: bytes) -> audio_io.DecodedAudio:
    try:
        return audio_io.decode_audio(data)
    except audio_io.AudioError as exc:
        raise VoiceError(f"voice {voice_id!r}: reference is not usable audio: {exc}") from exc


def validate_reference_audio(voice_id: str, wav: bytes) -> tuple[int, float, float]:
    """Check a reference recording (WAV of any sample format, or FLAC; channels are down-mixed); returns
    (sample_rate, duration_s, loudness_dbfs) or raises VoiceError."""
    decoded = decode_reference(voice_id, wav)
    samples, rate = decoded.samples, decoded.sample_rate
    if rate < MIN_SAMPLE_RATE:
        raise VoiceError(f"voice {voice_id!r}: reference is sampled at {rate} Hz, under the {MIN_SAMPLE_RATE} Hz "
                         "minimum")
    duration = audio_io.duration_s(samples, rate)
    if duration > MAX_REFERENCE_S:
        raise VoiceError(f"voice {voice_id!r}: reference is {duration:.1f} s, over the {MAX_REFERENCE_S:.0f} s limit")
    if duration < MIN_REFERENCE_S:
        raise VoiceError(f"voice {voice_id!r}: reference is {duration:.2f} s, "
                         f"under the {MIN_REFERENCE_S:.0f} s minimum")
    loudness = audio_io.rms_dbfs(samples)
    if loudness < MIN_REFERENCE_DBFS:
        raise VoiceError(f"voice {voice_id!r}: reference is silent ({loudness:.0f} dBFS, the floor is "
                         f"{MIN_REFERENCE_DBFS:.0f} dBFS)")
    return rate, duration, loudness


def validate_reference(voice_id: str, wav: bytes, transcript: str) -> tuple[int, float, float]:
    """Check a reference recording and its transcript; returns (sample_rate, duration_s, loudness_dbfs)."""
    validate_voice_id(voice_id)
    if not transcript or not transcript.strip():
        raise VoiceError(f"voice {voice_id!r}: the reference transcript is empty (F5-TTS needs the spoken text)")
    return validate_reference_audio(voice_id, wav)


def asr_available() -> bool:
    return importlib.util.find_spec("faster_whisper") is not None


def transcribe_reference(voice_id: str, wav: bytes, language: str = "en",
                         settings: Settings | None = None) -> tuple[str, str]:
    """(transcript, source) of a reference heard by the intelligibility gate's faster-whisper model.

    Raises VoiceError when no ASR is installed or configured, saying that a transcript is then needed.
    """
    if not asr_available():
        raise VoiceError(f"voice {voice_id!r}: no transcript given and no ASR installed to produce one; pass the "
                         "transcript (--transcript) or install the whisperx extra (faster-whisper)")
    from narration.gate import IntelligibilityGate

    gate = IntelligibilityGate(settings or Settings())
    samples, rate = audio_io.from_wav_bytes(wav)
    try:
        transcript = gate.transcribe(samples, rate, language=language.split("-")[0])
    except FileNotFoundError as exc:
        raise VoiceError(f"voice {voice_id!r}: no transcript given and the ASR model is missing ({exc}); pass the "
                         "transcript (--transcript)") from exc
    finally:
        gate.close()
    if not transcript.strip():
        raise VoiceError(f"voice {voice_id!r}: no transcript given and ASR heard no words in the reference")
    return transcript.strip(), f"asr:{gate.model_path.name}"


def upload_voice(
    storage: Storage, voice_id: str, wav: bytes, transcript: str | None, *, language: str = "en",
    espeak_voice: str = "en-us", extra: dict | None = None, settings: Settings | None = None, replace: bool = False,
) -> VoiceInfo:
    """Validate and store a reference; ``transcript=None`` has ASR produce it (an empty string is refused).

    The library keeps a mono 16-bit WAV of what was uploaded (any WAV sample format or FLAC; several channels are
    averaged, and ``downmixed_from_channels`` says so). An existing voice is replaced only with ``replace``.
    """
    validate_voice_id(voice_id)
    if not replace and storage.exists(voice_meta_key(voice_id)):
        raise VoiceError(f"voice {voice_id!r} already exists; pass --force (replace=True) to replace it")
    decoded = decode_reference(voice_id, wav)
    if (decoded.container, decoded.subtype, decoded.channels) != ("WAV", "PCM_16", 1):
        wav = audio_io.to_wav_bytes(decoded.samples, decoded.sample_rate)
    source = TRANSCRIPT_GIVEN
    if transcript is None:
        validate_voice_id(voice_id)
        rate, duration, loudness = validate_reference_audio(voice_id, wav)
        transcript, source = transcribe_reference(voice_id, wav, language, settings)
    else:
        rate, duration, loudness = validate_reference(voice_id, wav, transcript)
    info = VoiceInfo(voice_id=voice_id, language=language, transcript=transcript.strip(), sample_rate=rate,
                     duration_s=round(duration, 3), loudness_dbfs=round(loudness, 1), espeak_voice=espeak_voice,
                     transcript_source=source, source_audio=decoded.description,
                     downmixed_from_channels=decoded.channels if decoded.channels > 1 else None, extra=extra or {})
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


def presign_voice(storage: Storage, voice_id: str, expires_s: int) -> str:
    """A presigned GET link to a voice's reference audio (the voice must exist)."""
    get_voice_info(storage, voice_id)
    return storage.presign(voice_reference_key(voice_id), expires_s)


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
