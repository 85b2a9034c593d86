"""Latency of the teacher and of the fp32 student beside the engine's, for the report's accuracy vs
latency (Pareto) view. Each point says how it was obtained:

- x86 (measured here): the fp32 student in ONNX Runtime (the target's session settings, a separate
  process like the engine), the teacher in PyTorch eager (this process, the engine's thread count) or,
  for an ONNX teacher, in ONNX Runtime.
- other targets: the roofline estimate of the fp32 student graph (and of an ONNX teacher) on the
  target's [device]; a torch teacher has no graph to estimate and is left out, saying so.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext
    from edgekd.stages.context import Context

NOT_MEASURED = "not measured"


def _point(p90_ms: float | None, method: str, how: str, **extra: Any) -> dict[str, Any]:
    return {"p90_ms": p90_ms, "method": method, "how": how, **extra}


def _torch_eager(ctx: Context, module: Any, first: dict[str, np.ndarray], threads: int) -> dict[str, Any]:
    """Time `module` at batch 1 on `first` (the first evaluation sample's named inputs, through the
    task's forward) with as many intra-op threads as the engine uses (a fair comparison: idle spinning
    threads of a larger pool only add noise on a shared host)."""
    import torch

    from edgekd.common.toolchain import torch_threads
    from edgekd.perf.measure import sample, single_stream

    module.eval()
    task = ctx.task
    feeds = task.feed(first)  # tensors once, outside the timed call
    with torch_threads(threads), torch.no_grad():
        s = single_stream(sample(lambda: task.forward(module, feeds), ctx.profile.recipe.bench))
    return _point(s["p90_ms"], "measured", f"PyTorch {torch.__version__} eager fp32, batch 1, {threads} intra-op thread(s) "
                  f"(the engine's), {s['runs']} timed runs after warm-up, in the build process", p50_ms=s["p50_ms"])


def _ort_fp32(ctx: EngineContext, model: Path, out: Path, what: str) -> dict[str, Any]:
    from edgekd.backends.ort.session import runtime_description
    from edgekd.graph.decoder import complete_for, with_past
    from edgekd.perf.measure import measure

    bench = ctx.profile.recipe.bench.model_copy(update={"scenarios": ["SingleStream"], "profile_runs": 0})
    inputs = with_past(ctx.model_inputs, model)  # a decoder's past key/values, empty: the prompt's forward
    s = measure(model, complete_for(inputs, ctx.eval_feeds.first()), inputs, ctx.target.session, bench, out)
    return _point(s["p90_ms"], "measured", f"{what} in {runtime_description(ctx.target.session)}, batch 1, "
                  f"{s['runs']} timed runs after warm-up, in a separate process", p50_ms=s["p50_ms"])


def _estimated(ctx: EngineContext, model: Path, what: str) -> dict[str, Any]:
    from edgekd.analysis.estimate import estimate

    device = ctx.target.device
    # the float graph as the device runs float: fp32 where it has fp32 figures, else fp16 (e.g. the HTP)
    precision = next((p for p in ("fp32", "fp16") if p in device.precisions), None)
    if precision is None:
        return _point(None, NOT_MEASURED, f"the target's [device] has no float figures to estimate {what}")
    result = estimate(model, device, precision=precision, batch=1, inputs=ctx.model_inputs)
    return _point(result.latency_ms, "estimated", f"{what} as {precision}: roofline model with targets/{ctx.target_file.name}.toml "
                  f"[device] figures ({device.name}); the whole graph on the accelerator")


def _teacher(ctx: EngineContext, inputs: dict[str, Path], out: Path, measured: bool, threads: int) -> dict[str, Any]:
    from edgekd.distill.sources import teacher_source

    if not ctx.distills:
        return _point(None, NOT_MEASURED, "no teacher: `edgekd compile` was given a trained model")
    from edgekd.distill.teachers import OnnxTeacher, TorchTeacher

    source = teacher_source(ctx, inputs.get("teacher.safetensors"))
    if isinstance(source, OnnxTeacher):
        model = source.path
        return _ort_fp32(ctx, model, out, "the ONNX teacher fp32") if measured else _estimated(ctx, model, "the ONNX teacher")
    if isinstance(source, TorchTeacher):
        if measured:
            return _torch_eager(ctx, source.module, ctx.eval_feeds.first(), threads)
        return _point(None, NOT_MEASURED, "a torch teacher has no graph for the target's latency model (export it to ONNX to estimate it)")
    return _point(None, NOT_MEASURED, f"the teacher is {ctx.project.teacher.kind} (soft labels, no single model to time)")


def compare(ctx: EngineContext, inputs: dict[str, Path], engine: dict[str, Any], out: Path) -> dict[str, dict[str, Any]]:
    """{"teacher", "student_fp32", "engine"} -> {"p90_ms", "method", "how"}; `engine` is bench.json."""
    measured = engine.get("method") == "measured"
    student = (_ort_fp32(ctx, inputs["student.onnx"], out, "the fp32 student (student.onnx)") if measured
               else _estimated(ctx, inputs["student.onnx"], "the fp32 student (student.onnx)"))
    threads = int(engine.get("intra_op_threads") or 1)
    return {"teacher": _teacher(ctx, inputs, out, measured, threads), "student_fp32": student,
            "engine": _point(engine.get("p90_ms"), engine.get("method", NOT_MEASURED), engine.get("where", ""))}
