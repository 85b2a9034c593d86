"""Latency where nothing can be measured here: the roofline model (edgekd.analysis.estimate) with
the target file's [device] figures and, for accelerators, the node placement of the check stage."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.common.artefacts import BENCH_JSON, STUDENT_INT8, SUPPORT_JSON
from edgekd.pipeline.results import Metric

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context
    from edgekd.pipeline.stage import Outcome


def estimated_bench(ctx: Context, inputs: dict[str, Path], out: Path, why: str) -> Outcome:
    """Estimate the INT8 graph's batch-1 latency; bench.json gets the estimate and its assumptions."""
    from edgekd.analysis.estimate import estimate
    from edgekd.pipeline.stage import Outcome

    support = json.loads(inputs[SUPPORT_JSON].read_text())
    placement = {n["name"]: "accelerator" if n["runs_on"] == "accelerator" else "fallback" for n in support["nodes"]}
    if ctx.target.device.fallback is None:  # nothing to fall back to: everything is costed on the device
        placement = None
    result = estimate(inputs[STUDENT_INT8], ctx.target.device, precision="int8", batch=1, placement=placement,
                      inputs=ctx.model_inputs)
    how = (f"estimated ({why}): roofline model edgekd.analysis.estimate with targets/{ctx.target_file.name}.toml [device] "
           f"figures ({ctx.target.device.name}); a point estimate, so p50 = p90 = p99")
    data = {"method": "estimated", "where": how, "p50_ms": result.latency_ms, "p90_ms": result.latency_ms,
            "p99_ms": result.latency_ms, "mean_ms": result.latency_ms, "batch": 1, **result.to_json()}
    (out / BENCH_JSON).write_text(json.dumps(data, indent=1))
    metrics = {f"latency.{k}": Metric(result.latency_ms, "ms", "estimated", how) for k in ("p50_ms", "p90_ms", "p99_ms")}
    top = sorted(result.per_op_type.items(), key=lambda kv: -kv[1]["ms"])[:3]
    notes = [f"estimated {result.latency_ms:.4f} ms; largest op types: " + ", ".join(f"{k} {v['ms']:.4f} ms" for k, v in top),
             *result.assumptions[:6]]
    if result.unknown_shapes:  # costed without those tensors: say so where the build's notes are read
        notes.append(f"{len(result.unknown_shapes)} node(s) with shapes nothing here could infer were costed without them: "
                     + ", ".join(str(u["node"]) for u in result.unknown_shapes[:5]))
    return Outcome(metrics, notes)
