"""bench: latency of the engine (measured here, or estimated for an absent device), with the teacher and
the fp32 student for comparison."""
from __future__ import annotations

import json
from pathlib import Path

from edgekd.backends import registry as backends
from edgekd.common.artefacts import (
    BENCH_JSON,
    ENGINE_JSON,
    STUDENT_INT8,
    STUDENT_ONNX,
    SUPPORT_JSON,
    TEACHER_JSON,
    TEACHER_WEIGHTS,
    optional,
)
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.lm_metrics import bench_stage_metrics
from edgekd.pipeline.stage import Files, Outcome, Stage
from edgekd.tasks.specs import TIME_TO_FIRST_TOKEN


def wants_decoder_metrics(ctx: EngineContext) -> bool:
    """Whether the bench stage reports TTFT and decode tokens/s (measured, or why not) even where the
    result has none: for a task with the decoder scenarios, or a profile that budgets them."""
    scenarios = ctx.task.latency_scenarios() if ctx.task is not None and hasattr(ctx.task, "latency_scenarios") else ()
    budgets = ctx.profile.budgets
    return TIME_TO_FIRST_TOKEN in scenarios or budgets.ttft_ms is not None or budgets.decode_tokens_per_s is not None


def run_bench(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    outcome = backends.get(ctx.target.runtime).bench(ctx, inputs, out)
    result = json.loads((out / BENCH_JSON).read_text())
    outcome.metrics.update(bench_stage_metrics(result, wants_decoder_metrics(ctx)))
    if ctx.profile.recipe.bench.compare:
        from edgekd.perf.compare import compare

        result["compare"] = compare(ctx, inputs, result, out)
        (out / BENCH_JSON).write_text(json.dumps(result))
        outcome.notes += [f"{who}: p90 {'n/a' if p['p90_ms'] is None else format(p['p90_ms'], '.4g') + ' ms'} ({p['method']}: {p['how']})"
                          for who, p in result["compare"].items() if who != "engine"]
    return outcome


BENCH = Stage("bench", "SingleStream latency at batch 1, Offline throughput, per-op profile (measured here, or estimated for an absent device); teacher and fp32 student for comparison",
              (ENGINE_JSON, STUDENT_INT8, SUPPORT_JSON, STUDENT_ONNX, optional(TEACHER_JSON), optional(TEACHER_WEIGHTS)), (BENCH_JSON,),
              ("onnxruntime", "torch"),
              lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "bench": c.profile.recipe.bench.model_dump(),
                         "host": c.host_fingerprint(), "inputs": c.model_inputs.key()}, run_bench)
