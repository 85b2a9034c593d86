"""Engine tuning's measurement (worker side): every candidate session timed in interleaved rounds, the
candidates' order shuffled each round with a fixed seed, so that drift on a shared host hits all alike."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd.backends.runners import ONNXRUNTIME, open_runner, settings_from
from edgekd.perf.timing import time_runs

SEED = 0  # candidate order per round is shuffled with a fixed seed


def measure_candidates(request: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Worker side (edgekd.perf.measure): open every candidate's runner (its "runtime": ONNX Runtime, the
    default, or OpenVINO; edgekd.backends.runners), then time them in interleaved rounds on the first
    sample of the request's feeds. Returns the samples (ms, batch 1) per candidate, in request order."""
    with np.load(request["feeds"], allow_pickle=False) as archive:
        feed = {name: archive[name][:1] for name in archive.files}
    sessions = [open_runner(c.get("runtime", ONNXRUNTIME), Path(c["model"]), settings_from(c.get("runtime", ONNXRUNTIME), c["session"]))
                for c in request["candidates"]]
    for s in sessions:
        for _ in range(request["warmup_runs"]):
            s.run(feed)
    samples: list[list[float]] = [[] for _ in sessions]
    order = list(range(len(sessions)))
    rng = random.Random(SEED)
    for r in range(request["rounds"]):
        progress(f"tuning round {r + 1}/{request['rounds']}")
        rng.shuffle(order)
        for i in order:
            session = sessions[i]
            samples[i] += time_runs(lambda s=session: s.run(feed), request["runs_per_round"])
    return {"samples_ms": samples}

