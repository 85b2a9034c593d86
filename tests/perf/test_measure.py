"""edgekd/perf/measure.py: sample() stopping rules and summarize(). measure() is covered end to end."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from edgekd.config.models import BenchConfig
from edgekd.perf import measure as bench
from edgekd.perf import timing
from edgekd.perf.measure import ROUND, sample, summarize


class FakeClock:
    """Stands in for the `time` module in edgekd.perf.measure: time moves only when a run happens."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9


class Runner:
    """A run whose duration (ms) is `duration(call_index)` on the fake clock; counts calls."""

    def __init__(self, clock: FakeClock, duration: Callable[[int], float]) -> None:
        self.clock, self.duration, self.calls = clock, duration, 0

    def __call__(self) -> None:
        self.calls += 1
        self.clock.ns += int(self.duration(self.calls) * 1e6)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(bench, "time", fake)  # the deadline
    monkeypatch.setattr(timing, "time", fake)  # the timing loop
    return fake


def cfg(**kwargs: float) -> BenchConfig:
    base = {"warmup_runs": 5, "min_runs": 10, "max_runs": 5000, "max_seconds": 1e6, "stable_rel_change": 0.02}
    base.update(kwargs)
    return BenchConfig(**base)


def test_samples_are_milliseconds_and_warmup_is_not_counted(clock: FakeClock) -> None:
    run = Runner(clock, lambda i: 1000.0 if i <= 7 else 1.5)  # slow warm-up runs
    samples = sample(run, cfg(warmup_runs=7))
    assert run.calls == 7 + len(samples)
    assert samples == pytest.approx([1.5] * len(samples))


def test_stable_latency_stops_early(clock: FakeClock) -> None:
    run = Runner(clock, lambda i: 2.0)
    samples = sample(run, cfg(min_runs=10, max_runs=5000))
    assert 10 <= len(samples) < 5000
    assert len(samples) == 2 * ROUND  # the second round is the first that can be compared


def test_stable_latency_still_runs_min_runs(clock: FakeClock) -> None:
    run = Runner(clock, lambda i: 2.0)
    assert len(sample(run, cfg(min_runs=450, max_runs=5000))) == 450 + (-450 % ROUND)
    assert len(sample(run, cfg(min_runs=300, max_runs=5000))) == 300


@pytest.mark.parametrize("max_runs", [150, 1000, 1234])
def test_unstable_latency_stops_at_max_runs(clock: FakeClock, max_runs: int) -> None:
    run = Runner(clock, lambda i: float(i))  # always getting slower: p90 never settles
    samples = sample(run, cfg(warmup_runs=0, min_runs=10, max_runs=max_runs))
    assert len(samples) == max_runs
    assert run.calls == max_runs


def test_min_equal_max_runs_gives_exactly_that_many(clock: FakeClock) -> None:
    run = Runner(clock, lambda i: 1.0)
    assert len(sample(run, cfg(warmup_runs=3, min_runs=150, max_runs=150))) == 150
    assert run.calls == 153


def test_deadline_stops_after_min_runs(clock: FakeClock) -> None:
    run = Runner(clock, lambda i: float(i))  # unstable, 1 ms and more per run
    samples = sample(run, cfg(warmup_runs=0, min_runs=200, max_runs=5000, max_seconds=0.05))
    assert len(samples) == 200  # deadline passed in round 1, but min_runs comes first


def test_deadline_starts_after_warmup(clock: FakeClock) -> None:
    # warm-up alone (1 s) outlasts max_seconds; the timed runs (microseconds, always slower) do not
    run = Runner(clock, lambda i: 100.0 if i <= 10 else (i - 10) * 1e-3)
    samples = sample(run, cfg(warmup_runs=10, min_runs=100, max_runs=5000, max_seconds=0.5))
    assert ROUND < len(samples) < 5000  # stopped by the deadline, but not right after round 1
    assert sum(samples) >= 500.0
    assert run.calls == 10 + len(samples)


def test_real_clock_with_cheap_callable() -> None:
    calls = []
    samples = sample(lambda: calls.append(1), BenchConfig(warmup_runs=4, min_runs=10, max_runs=10))
    assert len(samples) == 10 and len(calls) == 14
    assert all(s >= 0.0 for s in samples)


def test_summarize_known_samples() -> None:
    samples = [float(v) for v in range(1, 11)]
    summary = summarize(samples)
    assert summary["runs"] == 10
    assert summary["min_ms"] == 1.0 and summary["max_ms"] == 10.0
    assert summary["mean_ms"] == pytest.approx(5.5)
    assert summary["p50_ms"] == pytest.approx(5.5)
    assert summary["p90_ms"] == pytest.approx(np.percentile(samples, 90)) == pytest.approx(9.1)
    assert summary["p99_ms"] == pytest.approx(9.91)
    assert summary["throughput_per_s"] == pytest.approx(1000.0 / 5.5)
    assert set(summary) == {"runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput_per_s"}


def test_summarize_is_json_friendly_and_ordered() -> None:
    summary = summarize([0.5, 0.2, 0.9, 0.4])
    assert isinstance(summary["runs"], int)
    assert all(isinstance(v, float) for k, v in summary.items() if k != "runs")
    assert summary["min_ms"] <= summary["p50_ms"] <= summary["p90_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_summarize_single_sample() -> None:
    summary = summarize([2.0])
    assert summary["runs"] == 1
    assert summary["p50_ms"] == summary["p99_ms"] == summary["mean_ms"] == 2.0
    assert summary["throughput_per_s"] == pytest.approx(500.0)
