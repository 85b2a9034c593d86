"""The one timing loop every latency number edgekd measures goes through (SingleStream, Offline,
engine tuning): wall-clock time.perf_counter_ns around each call, in milliseconds."""
from __future__ import annotations

import time
from typing import Callable


def time_runs(run: Callable[[], object], count: int) -> list[float]:
    """Call `run` `count` times; the wall-clock milliseconds of each call."""
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


def time_for(run: Callable[[], object], seconds: float, min_runs: int) -> list[float]:
    """Call `run` until `seconds` have passed and at least `min_runs` calls were timed."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < min_runs or time.perf_counter() < deadline:
        samples += time_runs(run, 1)
    return samples
