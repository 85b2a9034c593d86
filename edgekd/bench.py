"""Latency sampling: one routine for every backend, run in a fresh process so that peak memory
is the engine's process and not the build's.

`python -m edgekd.bench REQUEST.json` is the worker; `measure()` starts it and reads its result.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd.config.models import BenchConfig
from edgekd.config.target import SessionConfig
from edgekd.deploy.run_on_device import summarize  # one definition, shared with the standalone device-side runner

ROUND = 100  # runs between stability checks


def sample(run_once: Callable[[], object], cfg: BenchConfig) -> list[float]:
    """Warm up, then time `run_once` in rounds until p90 moves less than `stable_rel_change`
    between rounds (at least `min_runs`, at most `max_runs` or `max_seconds`). Milliseconds."""
    for _ in range(cfg.warmup_runs):
        run_once()
    samples: list[float] = []
    last_p90 = None
    deadline = time.perf_counter() + cfg.max_seconds
    while len(samples) < cfg.max_runs:
        for _ in range(min(ROUND, cfg.max_runs - len(samples))):
            start = time.perf_counter_ns()
            run_once()
            samples.append((time.perf_counter_ns() - start) / 1e6)
        p90 = float(np.percentile(samples, 90))
        stable = last_p90 is not None and abs(p90 - last_p90) <= cfg.stable_rel_change * last_p90
        if len(samples) >= cfg.min_runs and (stable or time.perf_counter() > deadline):
            break
        last_p90 = p90
    return samples


def _memory_mb(field: str) -> float | None:
    """VmRSS (resident now) or VmHWM (peak resident) of this process from /proc/self/status, in MiB.
    Both belong to this process image: unlike getrusage's ru_maxrss they do not carry over the
    parent's memory from before exec. None where /proc is absent (not Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return None


def _worker(request_path: Path) -> dict[str, Any]:
    request = json.loads(request_path.read_text())
    from edgekd.backends.onnxruntime import open_session, resolved_threads

    cfg = SessionConfig.model_validate(request["session"])
    feed_x = np.load(request["input"])
    before_mb = _memory_mb("VmRSS")
    session = open_session(Path(request["engine"]), cfg)
    feed = {session.get_inputs()[0].name: feed_x}
    samples = sample(lambda: session.run(None, feed), BenchConfig.model_validate(request["bench"]))
    after_mb = _memory_mb("VmRSS")
    return {
        **summarize(samples),
        "samples_ms": samples,
        "batch": int(feed_x.shape[0]),
        "intra_op_threads": resolved_threads(cfg),
        "peak_rss_mb": _memory_mb("VmHWM"),
        "engine_rss_mb": None if after_mb is None or before_mb is None else after_mb - before_mb,
    }


def measure(engine: Path, feed_x: np.ndarray, session: SessionConfig, bench: BenchConfig, workdir: Path) -> dict[str, Any]:
    """Measure `engine` at the batch of `feed_x` in a child process; returns summary + samples."""
    np.save(workdir / "bench_input.npy", feed_x)
    request = {"engine": str(engine), "input": str(workdir / "bench_input.npy"),
               "session": session.model_dump(), "bench": bench.model_dump()}
    (workdir / "bench_request.json").write_text(json.dumps(request))
    proc = subprocess.run([sys.executable, "-m", "edgekd.bench", str(workdir / "bench_request.json")],
                          capture_output=True, text=True, check=False)
    (workdir / "bench_input.npy").unlink()
    (workdir / "bench_request.json").unlink()
    if proc.returncode != 0:
        raise RuntimeError(f"latency worker for {engine.name} exited {proc.returncode}:\n{proc.stderr}")
    return json.loads(proc.stdout)


if __name__ == "__main__":
    print(json.dumps(_worker(Path(sys.argv[1]))))
