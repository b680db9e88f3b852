"""Streamed audio: loudness, true peak and normalisation block by block equal the whole-array results (pyloudnorm's
integrated loudness, 4x oversampling of the whole signal); render delivers a master longer than several blocks
through files with the figures and samples of the whole-array path; the report's waveform is reduced block by
block to the same envelope, and a long item's words are not drawn one by one."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import pyloudnorm
import pytest
import soundfile
from scipy.signal import resample_poly

from narration import audio as audio_io
from narration.layout import BatchLayout
from narration.loudness import LoudnessError, LoudnessMeter, measure, normalise
from narration.render import AudioDelivery, deliver_audio
from narration.report import MAX_DRAWN_WORDS, Envelope, waveform_columns, waveform_svg
from narration.schema import ItemStatus, SynthesisRecord, WordTiming

RATE = 22050
LSB_24 = 2.0 ** -23
FFMPEG = shutil.which("ffmpeg")


def espeak_speech(narrator_wav: bytes, seconds: float) -> np.ndarray:
    """The espeak-ng reference take repeated to ``seconds`` (float64, its own 22.05 kHz rate)."""
    take, rate = audio_io.from_wav_bytes(narrator_wav)
    assert rate == RATE
    repeats = int(seconds * rate / len(take)) + 1
    return np.tile(take.astype(np.float64), repeats)[: int(seconds * rate)]


def signals(narrator_wav: bytes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    bursts = np.zeros(RATE * 9 + 777)
    bursts[RATE * 2:RATE * 2 + RATE // 2] = 0.7 * rng.standard_normal(RATE // 2)
    bursts[RATE * 6:RATE * 7] = 0.05 * rng.standard_normal(RATE)
    return {
        "espeak speech": espeak_speech(narrator_wav, 21.3),
        "sine": 0.4 * np.sin(2 * np.pi * 997 * np.arange(RATE * 5 + 4321) / RATE),
        "silence with bursts": bursts,
        "odd length": 0.2 * rng.standard_normal(RATE // 2 + 13),  # one gating block and a bit
    }


@pytest.mark.parametrize("block", [997, 8192, 1 << 18])
def test_streamed_loudness_and_true_peak_equal_the_whole_array_measures(narrator_wav, block):
    for name, signal in signals(narrator_wav).items():
        lufs, peak = measure(audio_io.ArrayReader(signal, RATE), block=block)
        assert lufs == pytest.approx(pyloudnorm.Meter(RATE).integrated_loudness(signal), abs=0.01), name
        whole_peak = 20 * np.log10(np.abs(resample_poly(signal, 4, 1)).max())
        assert peak == pytest.approx(whole_peak, abs=0.01), name


def test_too_short_and_silent_audio_cannot_be_measured():
    with pytest.raises(LoudnessError, match="too short"):
        LoudnessMeter(RATE, int(0.39 * RATE))
    with pytest.raises(LoudnessError, match="silent"):
        measure(audio_io.ArrayReader(np.zeros(RATE * 2), RATE), block=1000)


def limited_speech(narrator_wav: bytes) -> np.ndarray:
    """Quiet speech with clicks that a plain gain to -14 LUFS would push over -1 dBTP."""
    speech = 0.3 * espeak_speech(narrator_wav, 30.0)
    for at in (RATE * 3, RATE * 12 + 5, RATE * 24 - 3):
        speech[at:at + 30] = 0.95
    return speech


@pytest.mark.parametrize("block", [1000, 65_536])
def test_normalising_block_by_block_equals_normalising_the_whole_signal(narrator_wav, block):
    for signal in (limited_speech(narrator_wav), signals(narrator_wav)["sine"]):
        whole, whole_report = normalise(signal, RATE, -14.0, -1.0, block=len(signal))
        blocked, blocked_report = normalise(signal, RATE, -14.0, -1.0, block=block)
        assert blocked_report == whole_report
        assert len(blocked) == len(whole) == len(signal)
        assert np.abs(blocked - whole).max() <= LSB_24
    assert whole_report.limited is False
    assert normalise(limited_speech(narrator_wav), RATE, -14.0, -1.0, block=block)[1].limited


def put_master(storage, layout: BatchLayout, samples: np.ndarray) -> SynthesisRecord:
    key = layout.audio("programme")
    storage.put_bytes(key, audio_io.to_wav_bytes(samples, RATE))
    return SynthesisRecord(item_id="programme", status=ItemStatus.SYNTHESIZED, backend="espeak-ng", audio_key=key,
                           sample_rate=RATE, audio_seconds=round(len(samples) / RATE, 3))


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (scripts/system-packages.sh) is not installed")
def test_a_master_of_many_blocks_is_delivered_as_the_whole_array_path_would(storage, narrator_wav, tmp_path):
    samples = limited_speech(narrator_wav)
    samples = np.concatenate([samples] * 3)  # 90 s: seven render blocks
    layout = BatchLayout("long")
    synthesis = put_master(storage, layout, samples)
    delivery = AudioDelivery(-14.0, -1.0, ["mp3", "opus", "m4a"])
    outputs, fields = deliver_audio(storage, layout, "programme", synthesis, delivery)

    stored = audio_io.from_wav_bytes(audio_io.to_wav_bytes(samples, RATE))[0]  # the master as its WAV holds it
    expected, report = normalise(stored, RATE, -14.0, -1.0, block=len(stored))
    delivered, rate = soundfile.read(io.BytesIO(storage.get_bytes(outputs["audio"])), dtype="float64")
    assert rate == RATE and len(delivered) == len(expected)
    assert np.abs(delivered - expected).max() <= 1.01 * LSB_24  # 24-bit rounding of the same samples
    record = json.loads(storage.get_bytes(layout.delivery("programme")))
    assert record["loudness"] == report.model_dump() and record["loudness"]["limited"]
    assert record["duration_s"] == round(len(samples) / RATE, 4) and record["sample_rate"] == RATE
    assert set(record["outputs"]) == {"audio", "mp3", "opus", "m4a"} == set(outputs)
    assert fields["loudness_lufs"] == report.integrated_lufs and fields["true_peak_dbtp"] <= -1.0
    for kind, key in outputs.items():
        path = tmp_path / key.rsplit("/", 1)[1]
        path.write_bytes(storage.get_bytes(key))
        proc = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "48000",
                               "-"], capture_output=True, check=True)
        assert len(proc.stdout) / 2 / 48000 == pytest.approx(len(samples) / RATE, abs=0.06), kind


def test_a_silent_master_ships_at_its_own_level_and_says_why(storage):
    layout = BatchLayout("quiet")
    synthesis = put_master(storage, layout, np.zeros(RATE * 3))
    outputs, fields = deliver_audio(storage, layout, "programme", synthesis, AudioDelivery(-16.0, -1.0, []))
    assert "silent" in fields["loudness_error"] and "delivered at its synthesised level" in fields["loudness_error"]
    delivered, _ = soundfile.read(io.BytesIO(storage.get_bytes(outputs["audio"])))
    assert len(delivered) == RATE * 3 and not delivered.any()


def test_a_truncated_master_is_an_item_fault_naming_the_frames(storage):
    layout = BatchLayout("cut")
    synthesis = put_master(storage, layout, np.full(RATE * 2, 0.1))
    storage.put_bytes(synthesis.audio_key, storage.get_bytes(synthesis.audio_key)[:-10_000])
    with pytest.raises(audio_io.AudioError, match="truncated WAV"):
        deliver_audio(storage, layout, "programme", synthesis, AudioDelivery(-16.0, -1.0, []))


def words(count: int, step_ms: int) -> list[WordTiming]:
    return [WordTiming(index=i, text=f"w{i}", spoken=f"w{i}", source="espeak", start_ms=i * step_ms,
                       end_ms=i * step_ms + step_ms - 20)
            for i in range(count)]


def test_the_envelope_reduced_block_by_block_draws_the_same_waveform(narrator_wav):
    samples = espeak_speech(narrator_wav, 12.345).astype(np.float32)
    timed = words(30, 400)
    columns = waveform_columns(len(samples), RATE, timed)
    blocks = ((start, samples[start:start + 1001]) for start in range(0, len(samples), 1001))
    envelope = Envelope.from_blocks(blocks, len(samples), RATE, columns)
    assert waveform_svg(None, None, timed, envelope=envelope) == waveform_svg(samples, RATE, timed)
    buckets = np.array_split(samples, columns)
    assert envelope.highs == [float(b.max()) for b in buckets] and envelope.lows == [float(b.min()) for b in buckets]


def test_a_long_items_waveform_draws_the_envelope_and_says_its_words_are_not_drawn():
    many = words(MAX_DRAWN_WORDS + 1, 300)
    samples = np.sin(np.arange(RATE * 610) / 7.0).astype(np.float32)
    svg = waveform_svg(samples, RATE, many)
    assert '<polygon class="env"' in svg and "<rect" not in svg
    assert f"{MAX_DRAWN_WORDS + 1:,} words: word spans are drawn for items of up to {MAX_DRAWN_WORDS:,}" in svg
    assert len(svg) < 40_000
    few = waveform_svg(samples, RATE, many[:MAX_DRAWN_WORDS])
    assert few.count("<rect") == MAX_DRAWN_WORDS


RENDER_CHILD = """
import resource, sys
import numpy as np
from narration.layout import BatchLayout
from narration.render import AudioDelivery, deliver_audio
from narration.schema import ItemStatus, SynthesisRecord
from narration.settings import Settings
from narration.storage import Storage
storage = Storage.from_settings(Settings())
key, seconds = sys.argv[1], float(sys.argv[2])
synthesis = SynthesisRecord(item_id="programme", status=ItemStatus.SYNTHESIZED, backend="espeak-ng", audio_key=key,
                            sample_rate=22050, audio_seconds=seconds)
import scipy.ndimage, scipy.signal, soundfile, soxr  # loaded first: only delivery's data counts
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
deliver_audio(storage, BatchLayout("bounded"), "programme", synthesis, AudioDelivery(-16.0, -1.0, []))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_delivering_a_long_master_keeps_memory_far_under_its_decoded_size(storage, tmp_path):
    """A 10-minute master (26 MB of 16-bit PCM, 106 MB as float64; decoding it whole raised the peak by 441 MB,
    measured): delivering it raises the process's peak RSS by less than one float64 copy of the programme."""
    import os
    import sys

    minutes, rng = 10, np.random.default_rng(2)
    path = tmp_path / "master.wav"
    with soundfile.SoundFile(path, "w", RATE, 1, format="WAV", subtype="PCM_16") as out:
        for _ in range(minutes):
            minute = 0.1 * rng.standard_normal(RATE * 60) * (1 + np.sin(np.arange(RATE * 60) / RATE))
            out.write(minute.astype(np.float32))
    key = storage.upload_file(BatchLayout("bounded").audio("programme"), str(path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["include", os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", RENDER_CHILD, key, str(minutes * 60)], env=env,
                          capture_output=True, text=True, check=True)
    growth_mb = float(proc.stdout.strip().splitlines()[-1])
    assert growth_mb < 100, f"delivery of a {minutes}-minute master raised peak RSS by {growth_mb:.0f} MB"
