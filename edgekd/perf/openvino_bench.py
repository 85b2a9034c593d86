"""The bench worker's side for an OpenVINO engine (edgekd.perf.measure runs it in its own process):
SingleStream at batch 1 and the Offline scenario through the same timing loop, scenarios and summary
as ONNX Runtime engines. Not for OpenVINO: the per-op profile (ONNX Runtime's profiler) and the
decoder scenarios (decoders stay on ONNX Runtime), each said in the result."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from edgekd.backends.openvino.runtime import OpenVinoRunner, description
from edgekd.backends.openvino.settings import OpenVinoSettings
from edgekd.common.toolchain import cpu_model
from edgekd.config.models import BenchConfig
from edgekd.deploy.run_on_device import memory_mb
from edgekd.graph.inputs import ModelInputs
from edgekd.perf.scenarios import batch_feed, offline, static_batch


def bench_openvino(request: dict[str, Any], progress: Callable[[str], None],
                   single_stream: Callable[[Callable[[], object], BenchConfig], dict[str, Any]]) -> dict[str, Any]:
    """`single_stream(run_once, bench)`: the worker's SingleStream loop and summary (edgekd.perf.measure
    passes its own, so that both runtimes are timed by one loop)."""
    settings = OpenVinoSettings.model_validate(request["session"])
    bench = BenchConfig.model_validate(request["bench"])
    engine, inputs = Path(request["engine"]), ModelInputs.from_json(request["inputs"])
    with np.load(request["feeds"], allow_pickle=False) as archive:
        rows = {name: archive[name] for name in archive.files}
    before_mb = memory_mb("VmRSS")
    runner = OpenVinoRunner(engine, settings)
    batch = static_batch(inputs) or 1
    feed = batch_feed(rows, inputs, batch)
    progress("SingleStream")
    result = single_stream(lambda: runner.run(feed), bench)
    after_mb = memory_mb("VmRSS")
    result.update({"batch": batch, "inputs": inputs.describe(), "intra_op_threads": settings.threads(), "runtime": "openvino",
                   "openvino": settings.model_dump(), "runtime_description": f"{description(settings)} on {cpu_model()}",
                   "engine_rss_mb": None if after_mb is None or before_mb is None else after_mb - before_mb})
    result["scenarios"] = {"SingleStream": {k: v for k, v in result.items() if k != "samples_ms"}}
    if "Offline" in bench.scenarios:  # offline() runs session.run(None, feed): the runner behind that call
        session = SimpleNamespace(run=lambda _outputs, f: runner.run(f))
        result["scenarios"]["Offline"] = offline(session, rows, inputs, bench.offline_max_batch, bench.offline_seconds, progress)
    if bench.profile_runs:
        result["top_ops_how"] = "not measured: the per-op profile is ONNX Runtime's profiler, and this engine runs on OpenVINO"
    result["peak_rss_mb"] = memory_mb("VmHWM")
    return result
