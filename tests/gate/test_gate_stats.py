"""edgekd/gate/stats.py: the bootstrap interval of p90(candidate) / p90(baseline), on synthetic
latency samples whose true p90 ratio is known (a series scaled by k has p90 ratio exactly k)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edgekd.gate import stats
from edgekd.gate.stats import bootstrap_p90, check_samples, p90_ratio

LIMIT = 1.10  # the default gate: +10 %


def lognormal(seed: int, n: int = 400, scale: float = 1.0) -> np.ndarray:
    """Independent runs, right-skewed like real latencies (median 0.03 ms, sigma 0.2)."""
    return scale * 0.03 * np.random.default_rng(seed).lognormal(0.0, 0.2, n)


def slow_stretches(rng: np.random.Generator, n: int = 400, phi: float = 0.9, sigma: float = 0.15) -> np.ndarray:
    """Consecutive runs that are slow together (an AR(1) log-latency, lag-1 correlation 0.9), as a
    noisy neighbour makes them; the marginal distribution is lognormal with sigma `sigma`."""
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return np.exp(sigma * np.sqrt(1 - phi**2) * x)


def coverage(make_pair, true_ratio: float, replications: int = 100) -> float:
    hits = 0
    for i in range(replications):
        base, cand = make_pair(i)
        ci = p90_ratio(base, cand, resamples=500, seed=i)
        hits += ci.low <= true_ratio <= ci.high
    return hits / replications


def decisions(scale: float, n: int = 400, pairs: int = 30) -> Counter[str]:
    """The gate's decision for `pairs` independent baseline/candidate benches, candidate `scale` x slower."""
    return Counter(p90_ratio(lognormal(2 * i + 100, n), lognormal(2 * i + 101, n, scale), resamples=1000, seed=i).decide(LIMIT)
                   for i in range(pairs))


def test_same_distribution_passes() -> None:
    assert decisions(1.0) == {"pass": 30}  # two benches of one engine: sample noise alone never fails


def test_a_30_percent_slower_engine_fails() -> None:
    assert decisions(1.3) == {"fail": 30}


def test_a_slowdown_right_at_the_limit_is_not_failed_on_noise() -> None:
    """True ratio 1.10 = the limit: the interval straddles it, so the gate says inconclusive (exit 0),
    and at most the interval's one-sided error rate (2.5 %) of such pairs fail."""
    counts = decisions(1.1, n=100)
    assert counts["fail"] <= 1 and counts["inconclusive"] >= 25, counts


def test_interval_covers_the_true_ratio_about_as_often_as_its_confidence() -> None:
    rate = coverage(lambda i: (lognormal(1000 + i, n=200), lognormal(2000 + i, n=200, scale=1.2)), 1.2)
    assert 0.88 <= rate <= 1.0, rate


def test_blocks_keep_slow_stretches_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """With serially correlated runs, resampling single runs (blocks of 1) gives intervals far too
    narrow; blocks of sqrt(n) runs cover the true ratio much more often."""
    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(i)
        return slow_stretches(rng), 1.2 * slow_stretches(rng)

    blocks = coverage(pair, 1.2, replications=60)
    monkeypatch.setattr(stats, "block_length", lambda n: 1)
    single_runs = coverage(pair, 1.2, replications=60)
    assert blocks >= 0.75 and blocks - single_runs >= 0.2, (blocks, single_runs)


def test_same_inputs_and_seed_give_the_same_interval() -> None:
    a, b = lognormal(1), lognormal(2)
    assert p90_ratio(a, b, seed=7) == p90_ratio(a, b, seed=7)
    assert p90_ratio(a, b, seed=7) != p90_ratio(a, b, seed=8)


def test_point_estimate_is_the_ratio_of_the_reported_p90s() -> None:
    a, b = lognormal(1), lognormal(2, scale=1.3)
    assert p90_ratio(a, b).ratio == pytest.approx(np.percentile(b, 90) / np.percentile(a, 90))


def test_chunked_resampling_gives_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = lognormal(3, n=300)
    whole = bootstrap_p90(samples, 1000, np.random.default_rng(3))
    monkeypatch.setattr(stats, "_CHUNK_VALUES", 3000)  # 10 resamples per chunk
    assert np.array_equal(whole, bootstrap_p90(samples, 1000, np.random.default_rng(3)))


@pytest.mark.parametrize("samples, message", [
    (None, "no latency samples"), ([], "no latency samples"), (["fast"] * 30, "other than numbers"),
    ([0.1] * 10, "only 10 latency samples"), ([0.1] * 29 + [-1.0], "positive"), ([0.1] * 29 + [float("nan")], "finite"),
])
def test_unusable_samples_are_refused(samples: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_samples(samples)
