"""MLPerf-style scenarios on an open ONNX Runtime session, and its per-node profile.

SingleStream: one sample at a time (batch 1); the latency distribution is the result (edgekd.perf.measure.sample).
Offline: every sample available at once; the result is throughput, at the batch size that gives the most.
Both run inside the bench worker process (edgekd.perf.measure), which owns the session.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.deploy.run_on_device import summarize
from edgekd.graph.inputs import ModelInputs
from edgekd.perf.timing import time_for

MIN_OFFLINE_RUNS = 5
GAIN_TO_GO_ON = 1.05  # stop doubling the batch once throughput grows less than 5 % twice in a row


def offline_batches(max_batch: int, static_batch: int | None) -> list[int]:
    """1, 2, 4, ... up to `max_batch` (and `max_batch` itself); a static-batch graph runs its batch only."""
    if static_batch is not None:
        return [static_batch]
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


def _time_batch(run: Callable[[], object], seconds: float) -> list[float]:
    run()  # warm-up: first run of a new shape allocates
    return time_for(run, seconds, MIN_OFFLINE_RUNS)


def static_batch(inputs: ModelInputs) -> int | None:
    """The batch a graph fixes (None when some input has a dynamic batch axis)."""
    if any(i.batch_axis is not None for i in inputs.inputs):
        return None
    return inputs.inputs[0].shape[0] if inputs.inputs and inputs.inputs[0].shape else None


def batch_feed(rows: dict[str, np.ndarray], inputs: ModelInputs, batch: int) -> dict[str, np.ndarray]:
    """A feed of `batch` samples from `rows` (samples on axis 0, tiled when there are fewer);
    inputs without a batch axis get their first `batch` rows (a static batch)."""
    feed = {}
    for spec in inputs.inputs:
        array = rows[spec.name]
        feed[spec.name] = (np.resize(array, (batch, *array.shape[1:])).astype(array.dtype) if spec.batch_axis is not None
                           else np.ascontiguousarray(array[:batch]))
    return feed


def offline(session: Any, rows: dict[str, np.ndarray], inputs: ModelInputs, max_batch: int, seconds: float,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Throughput (samples/s) per batch size, doubling while it still grows; the best batch wins.
    `rows` (named inputs, samples on axis 0) are tiled to the batch size when there are fewer."""
    static = static_batch(inputs)
    results: list[dict[str, Any]] = []
    flat = 0
    for batch in offline_batches(max_batch, static):
        feed = batch_feed(rows, inputs, batch)
        progress(f"Offline batch {batch}")
        samples = _time_batch(lambda: session.run(None, feed), seconds)
        stats = summarize(samples)
        results.append({"batch": batch, "throughput_per_s": batch * 1000.0 / stats["mean_ms"], "p90_ms": stats["p90_ms"],
                        "mean_ms": stats["mean_ms"], "runs": stats["runs"]})
        if len(results) > 1 and results[-1]["throughput_per_s"] < GAIN_TO_GO_ON * max(r["throughput_per_s"] for r in results[:-1]):
            flat += 1
            if flat == 2:
                break
        else:
            flat = 0
    best = max(results, key=lambda r: r["throughput_per_s"])
    return {"best_batch": best["batch"], "throughput_per_s": best["throughput_per_s"], "batches": results,
            "static_batch": static is not None,
            "how": f"batch sizes doubled from 1 while throughput grew >= {GAIN_TO_GO_ON - 1:.0%} (stopping after two "
                   f"that did not); each timed for {seconds} s (at least {MIN_OFFLINE_RUNS} runs) after one warm-up run; "
                   "throughput = batch x 1000 / mean latency"}


CONTROL_FLOW = ("If", "Loop", "Scan")  # their kernel time holds their subgraphs' nodes, which the profile lists too


def top_ops(profile_file: Path, top: int = 10) -> list[dict[str, Any]]:
    """Kernel time per op type from an ONNX Runtime profile (chrome-trace JSON): each node's median
    *_kernel_time over the profiled runs (robust to a run the OS interrupted), summed per op type.
    Control-flow nodes are left out: their subgraphs' nodes are counted themselves (a prompt/decode
    split engine's If: edgekd.graph.phase_split)."""
    events = json.loads(profile_file.read_text())
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for ev in events:
        if ev.get("args", {}).get("op_name") in CONTROL_FLOW:
            continue
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            per_node[(ev.get("args", {}).get("op_name", "?"), ev["name"][: -len("_kernel_time")])].append(float(ev.get("dur", 0)) / 1000.0)
    return per_op_type(per_node, top)


def per_op_type(per_node_ms: Mapping[tuple[str, str], list[float]], top: int = 10) -> list[dict[str, Any]]:
    """{(op type, node name): times in ms over the profiled runs} -> the `top` op types by the sum of
    their nodes' median times: {"op_type", "ms", "pct", "nodes"} (any runtime's per-node profile)."""
    total_ms: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    for (op, _), durations in per_node_ms.items():
        total_ms[op] += float(np.median(durations))
        nodes[op] += 1
    all_ms = sum(total_ms.values()) or 1.0
    rows = [{"op_type": op, "ms": ms, "pct": 100.0 * ms / all_ms, "nodes": nodes[op]} for op, ms in total_ms.items()]
    return sorted(rows, key=lambda r: -r["ms"])[:top]


def profile_ops(open_session: Callable[[Any], Any], feed: dict[str, np.ndarray], runs: int, workdir: Path) -> list[dict[str, Any]]:
    """Run `runs` times under ONNX Runtime's profiler (a separate session: profiling slows every run)
    and return the op types by kernel time. `open_session(options_hook)` opens the session."""
    def hook(opts: Any) -> None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(workdir / "ort_profile")

    session = open_session(hook)
    session.run(None, feed)  # the first run's allocations are not the steady state
    for _ in range(runs):
        session.run(None, feed)
    path = Path(session.end_profiling())
    try:
        return top_ops(path)
    finally:
        path.unlink(missing_ok=True)
