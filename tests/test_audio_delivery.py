"""Delivered audio through the real pipeline (espeak-ng, pocketsphinx, the render step): every item's master is
normalised to the batch's loudness target under its true-peak ceiling, as ffmpeg's ebur128 filter measures it
(independent of pyloudnorm, which normalised it), and every encoding decodes in ffmpeg to the master's duration."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from narration.encodings import EncodingError, check_encodings
from narration.layout import BatchLayout
from narration.loudness import normalise
from narration.pipeline import align_chunk, load_chunk, synthesize_chunk
from narration.plan import BatchOptions, plan_batch
from narration.render import render_chunk
from narration.settings import Settings
from narration.subtitles import get_profile
from tests.dag_runs import jsonl

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (scripts/system-packages.sh) is not installed")
LINES = [
    {"id": "quiet", "text": "A short and quiet line.", "speed": 0.8},
    {"id": "longer", "text": "The evening bulletin continues with the weather: rain in the north, sun in the south, "
                             "and a cold night everywhere."},
    {"id": "fast", "text": "Prices rose by 3.2% in October.", "speed": 1.5},
]


def ebur128(path) -> tuple[float, float]:
    """(integrated loudness LUFS, true peak dBTP) as ffmpeg's ebur128 filter measures the file."""
    proc = subprocess.run([FFMPEG, "-nostats", "-hide_banner", "-i", str(path), "-filter_complex",
                           "ebur128=peak=true", "-f", "null", "-"], capture_output=True, text=True, check=True)
    summary = proc.stderr[proc.stderr.rindex("Summary:"):]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    true_peak = float(re.search(r"True peak:\s+Peak:\s+(-?[\d.]+) dBFS", summary).group(1))
    return integrated, true_peak


def decoded_seconds(path) -> float:
    """The duration ffmpeg decodes from the file (samples out of the decoder, not the container's estimate)."""
    proc = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "48000", "-"],
                          capture_output=True, check=True)
    return len(proc.stdout) / 2 / 48000


@pytest.fixture()
def timed_chunk(storage, narrator):
    storage.put_bytes("incoming/loud.jsonl", jsonl(*LINES))
    plan = plan_batch(storage, Settings(), "loud", ["incoming/loud.jsonl"], BatchOptions(), {"narrator"})
    chunk = load_chunk(storage, plan.chunks[0].key)
    synthesize_chunk(storage, Settings(), chunk)
    align_chunk(storage, Settings(), chunk)
    return chunk


@needs_ffmpeg
@pytest.mark.parametrize("target, ceiling", [(-23.0, -1.0), (-16.0, -1.5)])
def test_every_item_is_delivered_at_the_target_under_the_ceiling(storage, timed_chunk, tmp_path, target, ceiling):
    result = render_chunk(storage, Settings(), timed_chunk.model_copy(update={
        "formats": ["srt"], "loudness_target_lufs": target, "true_peak_ceiling_dbtp": ceiling,
        "audio_encodings": ["mp3", "opus", "m4a"]}))
    assert {i.status.value for i in result.items} == {"done"}
    layout = BatchLayout(timed_chunk.batch_id)
    frame_s = 1 / float(get_profile("netflix-adult", fps=30).rate)  # the shortest frame of any supported rate
    for item in timed_chunk.items:
        row = storage.get_json(layout.result(item.item_id))
        record = storage.get_json(layout.delivery(item.item_id))
        master = tmp_path / f"{item.item_id}.wav"
        master.write_bytes(storage.get_bytes(row["audio_key"]))
        assert row["audio_key"] == layout.delivery_audio(item.item_id, "wav")
        measured, peak = ebur128(master)
        assert abs(measured - target) <= 0.5, (item.item_id, measured)
        assert peak <= ceiling, (item.item_id, peak)
        # Before and after, in the row and the record; the synthesised take itself is left as it was.
        assert row["loudness_target_lufs"] == target and abs(row["loudness_lufs"] - target) <= 0.1
        assert row["loudness_lufs_before"] != row["loudness_lufs"] and row["true_peak_dbtp"] <= ceiling
        assert record["loudness"]["backend"] == "bs1770-blocks (pyloudnorm filters)"
        assert record["loudness"]["within_tolerance"]
        assert set(record["encoders"]) == {"audio", "mp3", "opus", "m4a"}
        master_s = soundfile.info(str(master)).duration
        for kind in ("mp3", "opus", "m4a"):
            encoded = tmp_path / f"{item.item_id}.{kind}"
            encoded.write_bytes(storage.get_bytes(row[f"{kind}_key"]))
            assert abs(decoded_seconds(encoded) - master_s) < frame_s, (item.item_id, kind)
            assert abs(ebur128(encoded)[0] - target) <= 0.5, (item.item_id, kind)


def test_normalisation_limits_peaks_that_the_gain_would_push_over_the_ceiling():
    rate = 24000
    t = np.arange(rate * 3) / rate
    speechlike = 0.05 * np.sin(2 * np.pi * 190 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t))
    speechlike[rate:rate + 40] = 0.9  # a click far above the rest
    out, report = normalise(speechlike, rate, -14.0, -1.0)
    assert report.limited and report.within_tolerance
    assert abs(report.integrated_lufs - -14.0) <= 0.5 and report.true_peak_dbtp <= -1.0
    assert report.integrated_lufs_before < -20 and report.true_peak_dbtp_before > -1.0


def test_unknown_encodings_fail_fast_and_name_the_valid_ones():
    with pytest.raises(EncodingError, match="unknown audio encoding.*valid: mp3, opus, m4a"):
        check_encodings(["mp3", "flac"])
    with pytest.raises(ValueError, match="unknown audio encoding"):
        BatchOptions(audio_encodings=["aiff"])
    with pytest.raises(ValueError, match="unknown audio encoding"):
        Settings(audio_encodings=["wma"])


def test_m4a_without_ffmpeg_says_what_is_missing(monkeypatch, tmp_path):
    from narration.encodings import encode

    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without ffmpeg
    with pytest.raises(EncodingError, match="m4a encoding \\(AAC\\) needs ffmpeg on PATH; choose mp3 or opus"):
        encode(np.zeros(24000, dtype=np.float32), 24000, "m4a")
