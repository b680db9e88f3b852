"""The voice library against the local S3 server, bad references included."""

from __future__ import annotations

import numpy as np
import pytest

from narration.audio import to_wav_bytes
from narration.voices import VoiceError, get_voice_info, list_voices, materialise_voice, upload_voice


def test_upload_list_and_materialise(storage, narrator_wav, tmp_path):
    info = upload_voice(storage, "anna", narrator_wav, "Reference words.", espeak_voice="en-gb")
    assert 1.0 <= info.duration_s <= 12.0 and info.loudness_dbfs > -50
    assert [v.voice_id for v in list_voices(storage)] == ["anna"]
    voice = materialise_voice(storage, "anna", str(tmp_path))
    assert voice.transcript == "Reference words." and voice.metadata["espeak_voice"] == "en-gb"
    assert open(voice.reference_path, "rb").read() == narrator_wav


@pytest.mark.parametrize("case, wav, transcript, message", [
    ("too long", to_wav_bytes(0.1 * np.sin(np.arange(16000 * 13) / 5.0), 16000), "text", "over the 12 s limit"),
    ("too short", to_wav_bytes(0.1 * np.sin(np.arange(8000) / 5.0), 16000), "text", "under the 1 s minimum"),
    ("silent", to_wav_bytes(np.zeros(16000 * 3), 16000), "text", "silent"),
    ("not audio", b"ID3 this is an mp3, honest", "text", "not usable audio"),
    ("no transcript", to_wav_bytes(0.1 * np.sin(np.arange(16000 * 3) / 5.0), 16000), "  ", "transcript is empty"),
])
def test_bad_references_are_refused_and_nothing_is_stored(storage, case, wav, transcript, message):
    with pytest.raises(VoiceError, match=message):
        upload_voice(storage, "bad", wav, transcript)
    assert list(storage.list_keys("voices/")) == []


def test_unsafe_voice_id_is_refused(storage, narrator_wav):
    with pytest.raises(VoiceError, match="voice id"):
        upload_voice(storage, "../x", narrator_wav, "text")


def test_unknown_voice(storage):
    with pytest.raises(VoiceError, match="unknown voice 'ghost'"):
        get_voice_info(storage, "ghost")
