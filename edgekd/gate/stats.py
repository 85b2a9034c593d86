"""The gate's latency statistic: a bootstrap confidence interval of p90(candidate) / p90(baseline)
from the raw per-run samples of two benches.

The samples of one bench are a time series, not independent draws: on a shared machine a noisy
neighbour or a frequency change slows a stretch of consecutive runs. A plain bootstrap would treat
every run as independent and give too narrow an interval; the circular block bootstrap resamples
stretches of `block_length(n)` consecutive runs, so such slow stretches stay together and widen the
interval. It cannot see drift *between* the two bench processes (one whole run 5 % slower than the
other): only the threshold's margin covers that (docs/ci.md; benchmarks/gate_noise.py measures it).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

QUANTILE = 90.0  # p90, computed as np.percentile does for report["latency"]["p90_ms"] (linear interpolation)
MIN_SAMPLES = 20  # fewer runs than this say nothing about a p90
_CHUNK_VALUES = 4_000_000  # resampled values held in memory at once (32 MB of float64)

Decision = Literal["pass", "fail", "inconclusive"]


def block_length(n: int) -> int:
    """Runs per resampled block: ceil(sqrt(n)). Longer than the n^(1/3) that is optimal for a
    stationary series, on purpose: slow stretches on a shared machine last many runs, and longer
    blocks keep them together (a wider, more cautious interval)."""
    return max(1, math.ceil(math.sqrt(n)))


Statistic = Callable[[np.ndarray], np.ndarray]  # rows of resampled runs [R, n] -> one value per row [R]


def p90_rows(rows: np.ndarray) -> np.ndarray:
    return np.percentile(rows, QUANTILE, axis=-1)


def mean_rows(rows: np.ndarray) -> np.ndarray:
    return rows.mean(axis=-1)


def bootstrap_p90(samples: np.ndarray, resamples: int, rng: np.random.Generator, statistic: Statistic = p90_rows) -> np.ndarray:
    """p90 (or `statistic`) of `resamples` circular block bootstrap resamples of the time-ordered
    `samples`: each resample joins ceil(n / L) blocks of L consecutive runs (wrapping at the end), cut to n."""
    n = samples.size
    block = block_length(n)
    blocks = math.ceil(n / block)
    offsets = np.arange(block)
    out = np.empty(resamples)
    rows_per_chunk = max(1, _CHUNK_VALUES // (blocks * block))
    for first in range(0, resamples, rows_per_chunk):
        rows = min(rows_per_chunk, resamples - first)
        starts = rng.integers(0, n, size=(rows, blocks, 1))
        index = ((starts + offsets) % n).reshape(rows, blocks * block)[:, :n]
        out[first:first + rows] = statistic(samples[index])
    return out


@dataclass(frozen=True)
class RatioInterval:
    """p90(candidate) / p90(baseline): the point estimate from all samples and its two-sided
    bootstrap percentile interval at `confidence`."""

    ratio: float
    low: float
    high: float
    confidence: float
    resamples: int
    baseline_runs: int
    candidate_runs: int

    def decide(self, limit_ratio: float) -> Decision:
        """fail: even the interval's low end is above the limit (a slowdown beyond the noise);
        pass: its high end is at or below the limit; inconclusive: the interval straddles it."""
        if self.low > limit_ratio:
            return "fail"
        return "pass" if self.high <= limit_ratio else "inconclusive"

    def describe(self) -> str:
        return (f"circular block bootstrap, {self.resamples} resamples, blocks of "
                f"{block_length(self.baseline_runs)}/{block_length(self.candidate_runs)} consecutive runs over "
                f"{self.baseline_runs}/{self.candidate_runs} baseline/candidate samples")


def check_samples(samples: object) -> np.ndarray:
    """The samples as a float array; ValueError saying what is wrong when they are unusable."""
    if not isinstance(samples, list) or not samples:
        raise ValueError("no latency samples (latency.samples_ms is missing or empty)")
    try:
        arr = np.asarray(samples, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("latency.samples_ms holds something other than numbers") from None
    if arr.ndim != 1 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("latency.samples_ms must be a flat list of positive, finite milliseconds")
    if arr.size < MIN_SAMPLES:
        raise ValueError(f"only {arr.size} latency samples; the gate needs at least {MIN_SAMPLES}")
    return arr


def p90_ratio(baseline: np.ndarray, candidate: np.ndarray, confidence: float = 0.95, resamples: int = 2000,
              seed: int = 0, statistic: Statistic = p90_rows) -> RatioInterval:
    """The ratio of the candidate's p90 (or `statistic`: mean_rows for decode time per token) to the
    baseline's, with its bootstrap interval. The two benches are resampled independently; the same
    inputs and seed give the same interval."""
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be between 0.5 and 1, not {confidence}")
    base, cand = check_samples(list(baseline)), check_samples(list(candidate))
    rng = np.random.default_rng(seed)
    ratios = bootstrap_p90(cand, resamples, rng, statistic) / bootstrap_p90(base, resamples, rng, statistic)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    ratio = float(statistic(cand[None])[0] / statistic(base[None])[0])
    return RatioInterval(ratio, float(low), float(high), confidence, resamples, base.size, cand.size)
