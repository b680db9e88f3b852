"""Loudness of delivered audio: integrated loudness (ITU-R BS.1770 through pyloudnorm) and true peak, and
normalisation to a target with a true-peak ceiling (EBU R128: -23 LUFS, -1 dBTP; web and podcasts about -16 LUFS).

Normalisation is a gain; when that gain would lift the true peak over the ceiling, a look-ahead peak limiter
(a gain envelope that dips smoothly around each peak) holds the peaks and the gain is re-measured and corrected.
"""

from __future__ import annotations

import math

import numpy as np
import pyloudnorm
from pydantic import BaseModel, Field
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import resample_poly

from narration.errors import ItemFault

TRUE_PEAK_OVERSAMPLING = 4  # BS.1770-4 Annex 2: true peak from 4x oversampled audio
LIMITER_WINDOW_S = 0.005
PEAK_MARGIN_DB = 0.2  # limit a little under the ceiling: the measured true peak of the result varies by a few 0.01 dB
MAX_PASSES = 6
# True peak is measured in blocks with a margin wider than the oversampling filter's reach (10 input samples), so a
# long master never holds its 4x oversampled copy; the result is identical to oversampling it whole.
PEAK_BLOCK_SAMPLES = 1 << 18
PEAK_BLOCK_MARGIN = 64


class LoudnessError(ItemFault, ValueError):
    """Audio whose loudness cannot be measured (shorter than one 400 ms block, or silent)."""


class LoudnessReport(BaseModel):
    """An item's loudness before and after normalisation, and how it got there."""

    backend: str = "pyloudnorm"
    target_lufs: float
    true_peak_ceiling_dbtp: float
    integrated_lufs_before: float
    true_peak_dbtp_before: float
    integrated_lufs: float
    true_peak_dbtp: float
    gain_db: float
    limited: bool = Field(description="A peak limiter held the true peak under the ceiling.")
    within_tolerance: bool = Field(description="Within 0.5 LU of the target with the true peak under the ceiling.")


def _db(linear: float) -> float:
    return 20 * math.log10(linear) if linear > 0 else -math.inf


def _peak_blocks(audio: np.ndarray):
    """(start, stop, per-sample oversampled peaks of audio[start:stop]) block by block."""
    n = len(audio)
    for start in range(0, n, PEAK_BLOCK_SAMPLES):
        stop = min(n, start + PEAK_BLOCK_SAMPLES)
        lo, hi = max(0, start - PEAK_BLOCK_MARGIN), min(n, stop + PEAK_BLOCK_MARGIN)
        up = np.abs(resample_poly(np.asarray(audio[lo:hi], dtype=np.float64), TRUE_PEAK_OVERSAMPLING, 1))
        block = up[: (hi - lo) * TRUE_PEAK_OVERSAMPLING].reshape(hi - lo, TRUE_PEAK_OVERSAMPLING).max(axis=1)
        yield start, stop, block[start - lo:stop - lo]


def oversampled_peaks(audio: np.ndarray) -> np.ndarray:
    """Per sample, the highest absolute value of its 4x oversampled samples."""
    peaks = np.empty(len(audio), dtype=np.float64)
    for start, stop, block in _peak_blocks(audio):
        peaks[start:stop] = block
    return peaks


def true_peak_dbtp(audio: np.ndarray) -> float:
    """True peak in dBTP: the highest absolute sample of the 4x oversampled signal."""
    return _db(max((float(block.max()) for _, _, block in _peak_blocks(audio)), default=0.0))


def integrated_lufs(audio: np.ndarray, sample_rate: int) -> float:
    meter = pyloudnorm.Meter(sample_rate)
    try:
        value = float(meter.integrated_loudness(np.asarray(audio, dtype=np.float64)))
    except ValueError as exc:  # shorter than a gating block
        raise LoudnessError(f"audio too short to measure loudness: {exc}") from exc
    if not math.isfinite(value):
        raise LoudnessError("audio is silent: its loudness cannot be measured")
    return value


def _limit(audio: np.ndarray, sample_rate: int, ceiling_db: float) -> np.ndarray:
    """A look-ahead limiter: per sample the gain that keeps the oversampled peak under the ceiling, spread by a
    minimum filter and smoothed by a moving average of the same width, so the gain never exceeds what any
    nearby peak allows and has no sudden steps."""
    ceiling = 10 ** (ceiling_db / 20)
    peaks = oversampled_peaks(audio)
    needed = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    width = max(1, int(LIMITER_WINDOW_S * sample_rate))
    spread = minimum_filter1d(needed, size=2 * width + 1, mode="nearest")
    envelope = np.minimum(uniform_filter1d(spread, size=width, mode="nearest"), spread)
    return audio * envelope


def normalise(audio: np.ndarray, sample_rate: int, target_lufs: float, true_peak_ceiling_dbtp: float
              ) -> tuple[np.ndarray, LoudnessReport]:
    """The audio at ``target_lufs`` with its true peak at most ``true_peak_ceiling_dbtp``, and the figures."""
    source = np.asarray(audio, dtype=np.float64)
    before_lufs = integrated_lufs(source, sample_rate)
    before_peak = true_peak_dbtp(source)
    gain_db = target_lufs - before_lufs
    limited = False
    out = source
    for _ in range(MAX_PASSES):
        out = source * 10 ** (gain_db / 20)
        if true_peak_dbtp(out) > true_peak_ceiling_dbtp - PEAK_MARGIN_DB / 2:
            out = _limit(out, sample_rate, true_peak_ceiling_dbtp - PEAK_MARGIN_DB)
            limited = True
        error = target_lufs - integrated_lufs(out, sample_rate)
        if abs(error) < 0.05:
            break
        gain_db += error  # limiting lowered the loudness: raise the gain by what is missing and limit again
    after_lufs, after_peak = integrated_lufs(out, sample_rate), true_peak_dbtp(out)
    report = LoudnessReport(
        target_lufs=target_lufs, true_peak_ceiling_dbtp=true_peak_ceiling_dbtp,
        integrated_lufs_before=round(before_lufs, 2), true_peak_dbtp_before=round(before_peak, 2),
        integrated_lufs=round(after_lufs, 2), true_peak_dbtp=round(after_peak, 2), gain_db=round(gain_db, 2),
        limited=limited,
        within_tolerance=abs(after_lufs - target_lufs) <= 0.5 and after_peak <= true_peak_ceiling_dbtp)
    return out.astype(np.float32), report
