"""OpenVINO's per-op profile: the engine compiled again with PERF_COUNT on (a separate compiled model:
counting slows every inference), run `runs` times; each executed node's median real time, summed per
node type (edgekd.perf.scenarios.per_op_type, the same table as ONNX Runtime's profiler gives)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.openvino.runtime import DEVICE, core, read
from edgekd.backends.openvino.settings import OpenVinoSettings

HOW = ("OpenVINO CPU plugin per-node counters (PERF_COUNT: YES) in a separately compiled model, {runs} runs at batch {batch}: "
       "median real time per executed node per run, summed per node type (OpenVINO's fused node types; counting adds overhead, "
       "the shares are the point)")


def compiled_top_ops(compiled: Any, feed: Mapping[str, np.ndarray], runs: int, top: int = 10) -> list[dict[str, Any]]:
    """The op types by time of `compiled` (an ov.CompiledModel compiled with PERF_COUNT: YES)."""
    from edgekd.perf.scenarios import per_op_type

    request = compiled.create_infer_request()
    request.infer(dict(feed))  # the first run's allocations are not the steady state
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(runs):
        request.infer(dict(feed))
        for info in request.profiling_info:
            if str(info.status).endswith("EXECUTED"):
                per_node[(info.node_type, info.node_name)].append(info.real_time.total_seconds() * 1e3)
    return per_op_type(per_node, top)


def top_ops(model: Path, settings: OpenVinoSettings, feed: Mapping[str, np.ndarray], runs: int) -> list[dict[str, Any]]:
    """`model` (ONNX or IR) reshaped to `feed`'s static shapes and compiled with `settings` plus PERF_COUNT."""
    ov_model = read(model)
    ov_model.reshape({name: list(array.shape) for name, array in feed.items()})
    compiled = core().compile_model(ov_model, DEVICE, {**settings.properties(), "PERF_COUNT": "YES"})
    return compiled_top_ops(compiled, feed, runs)
