"""Loudness of delivered audio: integrated loudness (ITU-R BS.1770-4 gating with pyloudnorm's K-weighting filters)
and true peak, and normalisation to a target with a true-peak ceiling (EBU R128: -23 LUFS, -1 dBTP; web and
podcasts about -16 LUFS).

Normalisation is a gain; when that gain would lift the true peak over the ceiling, a look-ahead peak limiter
(a gain envelope that dips smoothly around each peak) holds the peaks and the gain is re-measured and corrected.

Everything runs block by block over a :class:`narration.audio.SampleReader` (an array or a WAV file), so an hour's
master is never decoded whole: the K-weighting filters carry their state across blocks, only the sums of squares
between gating-block edges are kept (a few hundred KB an hour), and the oversampling and the limiter read a margin
wider than their reach around each block, so the result equals processing the whole signal at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pyloudnorm
from pydantic import BaseModel, Field
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import lfilter, resample_poly

from narration.audio import ArrayReader, SampleReader
from narration.errors import ItemFault

TRUE_PEAK_OVERSAMPLING = 4  # BS.1770-4 Annex 2: true peak from 4x oversampled audio
LIMITER_WINDOW_S = 0.005
PEAK_MARGIN_DB = 0.2  # limit a little under the ceiling: the measured true peak of the result varies by a few 0.01 dB
MAX_PASSES = 6
# True peak is measured in blocks with a margin wider than the oversampling filter's reach (10 input samples), so a
# long master never holds its 4x oversampled copy; the result is identical to oversampling it whole.
PEAK_BLOCK_SAMPLES = 1 << 18
PEAK_BLOCK_MARGIN = 64
RENDER_BLOCK_SAMPLES = PEAK_BLOCK_SAMPLES  # samples normalised at a time (12 s at 22.05 kHz)
ABSOLUTE_GATE_LUFS = -70.0  # BS.1770-4: blocks under it are silence
RELATIVE_GATE_LU = -10.0


class LoudnessError(ItemFault, ValueError):
    """Audio whose loudness cannot be measured (shorter than one 400 ms block, or silent)."""


class LoudnessReport(BaseModel):
    """An item's loudness before and after normalisation, and how it got there."""

    backend: str = "bs1770-blocks (pyloudnorm filters)"  # our block-wise meter on pyloudnorm's K-weighting
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


class LoudnessMeter:
    """BS.1770-4 integrated loudness of a mono signal of ``frames`` samples fed in order, block by block: the same
    K-weighting filters, 400 ms gating blocks with 75 % overlap and gates as pyloudnorm's Meter, which measures a
    whole array. Only the sums of squares between consecutive gating-block edges are kept."""

    def __init__(self, sample_rate: int, frames: int):
        meter = pyloudnorm.Meter(sample_rate)
        block_s, step = meter.block_size, 1.0 - meter.overlap
        if frames < block_s * sample_rate:
            raise LoudnessError("audio too short to measure loudness: Audio must have length greater than the "
                                "block size.")
        self._stages = [(f.b, f.a, f.passband_gain, np.zeros(max(len(f.a), len(f.b)) - 1))
                        for f in meter._filters.values()]
        count = int(np.round((frames / sample_rate - block_s) / (block_s * step))) + 1
        lows = [int(block_s * (j * step) * sample_rate) for j in range(count)]  # pyloudnorm's block edges
        highs = [min(frames, int(block_s * (j * step + 1) * sample_rate)) for j in range(count)]
        self._edges = np.unique(np.array([*lows, *highs, frames], dtype=np.int64))
        self._first = np.searchsorted(self._edges, lows)
        self._last = np.searchsorted(self._edges, highs)
        self._sums = np.zeros(len(self._edges), dtype=np.float64)  # sum of squares from each edge to the next
        self._block_samples = block_s * sample_rate
        self._position = 0

    def add(self, block: np.ndarray) -> None:
        weighted = np.asarray(block, dtype=np.float64)
        for index, (b, a, gain, state) in enumerate(self._stages):
            weighted, state = lfilter(b, a, weighted, zi=state)
            weighted = gain * weighted
            self._stages[index] = (b, a, gain, state)
        squares = np.square(weighted)
        start, stop = self._position, self._position + len(squares)
        segment = int(np.searchsorted(self._edges, start, side="right")) - 1
        cuts = self._edges[np.searchsorted(self._edges, start, side="right"):
                           np.searchsorted(self._edges, stop, side="left")] - start
        self._sums[segment] += squares[:cuts[0]].sum() if len(cuts) else squares.sum()
        if len(cuts):
            self._sums[segment + 1:segment + 1 + len(cuts)] += np.add.reduceat(squares, cuts)
        self._position = stop

    def integrated(self) -> float:
        """Integrated loudness in LUFS; LoudnessError when the audio is silent."""
        width = int((self._last - self._first).max())
        index = self._first[:, None] + np.arange(width)
        energy = np.where(index < self._last[:, None], self._sums[np.minimum(index, len(self._sums) - 1)], 0.0)
        energy = energy.sum(axis=1) / self._block_samples
        with np.errstate(divide="ignore", invalid="ignore"):
            loudness = -0.691 + 10.0 * np.log10(energy)
            gated = energy[loudness >= ABSOLUTE_GATE_LUFS]
            relative = -0.691 + 10.0 * np.log10(gated.mean()) + RELATIVE_GATE_LU if len(gated) else math.nan
            kept = energy[(loudness > relative) & (loudness > ABSOLUTE_GATE_LUFS)]
            value = -0.691 + 10.0 * np.log10(kept.mean()) if len(kept) else -math.inf
        if not math.isfinite(value):
            raise LoudnessError("audio is silent: its loudness cannot be measured")
        return float(value)


def _limit(audio: np.ndarray, sample_rate: int, ceiling_db: float) -> np.ndarray:
    """A look-ahead limiter: per sample the gain that keeps the oversampled peak under the ceiling, spread by a
    minimum filter and smoothed by a moving average of the same width, so the gain never exceeds what any
    nearby peak allows and has no sudden steps."""
    ceiling = 10 ** (ceiling_db / 20)
    peaks = oversampled_peaks(audio)
    needed = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    width = _limiter_width(sample_rate)
    spread = minimum_filter1d(needed, size=2 * width + 1, mode="nearest")
    envelope = np.minimum(uniform_filter1d(spread, size=width, mode="nearest"), spread)
    return audio * envelope


def _limiter_width(sample_rate: int) -> int:
    return max(1, int(LIMITER_WINDOW_S * sample_rate))


def _processed(reader: SampleReader, gain: float, limit_db: float | None, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of the reader's signal times ``gain``, limited under ``limit_db`` when given. The
    limiter reads a margin beyond its reach (the filters' widths and the oversampling's), so a block is limited
    exactly as the whole signal would be."""
    if limit_db is None:
        return reader.read(start, stop) * gain
    reach = 2 * _limiter_width(reader.sample_rate) + PEAK_BLOCK_MARGIN
    lo, hi = max(0, start - reach), min(reader.frames, stop + reach)
    return _limit(reader.read(lo, hi) * gain, reader.sample_rate, limit_db)[start - lo:stop - lo]


def _output_blocks(reader: SampleReader, gain: float, limit_db: float | None, block: int
                   ) -> Iterator[tuple[np.ndarray, float]]:
    """(block of the processed signal, its highest oversampled absolute sample), in order."""
    frames = reader.frames
    for start in range(0, frames, block):
        stop = min(frames, start + block)
        lo, hi = max(0, start - PEAK_BLOCK_MARGIN), min(frames, stop + PEAK_BLOCK_MARGIN)
        around = _processed(reader, gain, limit_db, lo, hi)
        peaks = oversampled_peaks(around)[start - lo:stop - lo]
        yield around[start - lo:stop - lo], float(peaks.max())


def measure(reader: SampleReader, gain: float = 1.0, limit_db: float | None = None,
            sink: Callable[[np.ndarray], object] | None = None, block: int = RENDER_BLOCK_SAMPLES
            ) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) of the reader's signal times ``gain`` (limited under ``limit_db`` when
    given), each processed block passed to ``sink`` (float32) as it is made."""
    meter = LoudnessMeter(reader.sample_rate, reader.frames)
    peak = 0.0
    for samples, block_peak in _output_blocks(reader, gain, limit_db, block):
        meter.add(samples)
        peak = max(peak, block_peak)
        if sink is not None:
            sink(samples.astype(np.float32))
    return meter.integrated(), _db(peak)


def normalise_stream(reader: SampleReader, target_lufs: float, true_peak_ceiling_dbtp: float,
                     sink: Callable[[np.ndarray], object], block: int = RENDER_BLOCK_SAMPLES) -> LoudnessReport:
    """Pass the reader's signal at ``target_lufs`` with its true peak at most ``true_peak_ceiling_dbtp`` to
    ``sink`` block by block (float32), and return the figures. The signal is read once to measure it, once more
    per limiting pass, and once to deliver it."""
    before_lufs, before_peak = measure(reader, block=block)
    gain_db = target_lufs - before_lufs
    limited = False
    applied: tuple[float, float | None] = (10 ** (gain_db / 20), None)
    for _ in range(MAX_PASSES):
        gain = 10 ** (gain_db / 20)
        if before_peak + _db(gain) <= true_peak_ceiling_dbtp - PEAK_MARGIN_DB / 2:
            applied = (gain, None)
            break  # a plain gain lands on the target
        limited = True
        applied = (gain, true_peak_ceiling_dbtp - PEAK_MARGIN_DB)
        error = target_lufs - measure(reader, *applied, block=block)[0]
        if abs(error) < 0.05:
            break
        gain_db += error  # limiting lowered the loudness: raise the gain by what is missing and limit again
    after_lufs, after_peak = measure(reader, *applied, sink=sink, block=block)
    return LoudnessReport(
        target_lufs=target_lufs, true_peak_ceiling_dbtp=true_peak_ceiling_dbtp,
        integrated_lufs_before=round(before_lufs, 2), true_peak_dbtp_before=round(before_peak, 2),
        integrated_lufs=round(after_lufs, 2), true_peak_dbtp=round(after_peak, 2), gain_db=round(gain_db, 2),
        limited=limited,
        within_tolerance=abs(after_lufs - target_lufs) <= 0.5 and after_peak <= true_peak_ceiling_dbtp)


def normalise(audio: np.ndarray, sample_rate: int, target_lufs: float, true_peak_ceiling_dbtp: float,
              block: int = RENDER_BLOCK_SAMPLES) -> tuple[np.ndarray, LoudnessReport]:
    """The audio at ``target_lufs`` with its true peak at most ``true_peak_ceiling_dbtp``, and the figures."""
    blocks: list[np.ndarray] = []
    report = normalise_stream(ArrayReader(audio, sample_rate), target_lufs, true_peak_ceiling_dbtp, blocks.append,
                              block=block)
    return (np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)), report
