"""The quantize stage's accuracy-aware mixed precision (x86, ONNX Runtime CPU): when the static INT8
graph breaks quantize_accuracy_drop_pt on labelled data, the stage keeps the most sensitive ops in
float until it holds (edgekd.backends.ort.mixed_search) before any QAD, and that graph becomes
student_int8.onnx; the compile stage's tuner then times it against fp32 like every INT8 graph. The
record (sensitivity, steps) is written beside it as mixed_precision.json for the report."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgekd.backends.ort import session as ortb
from edgekd.backends.quality import quality_metrics
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import Metric
from edgekd.stages.common import metric_key

MIXED_JSON = "mixed_precision.json"
FUSED = "student_fused.onnx"


def configured(ctx: EngineContext) -> bool:
    """Whether the build is one the quantize stage may search for (from the configuration alone): x86
    (onnxruntime-cpu), tuning and the switch on, a task measured by accuracy, an accuracy budget."""
    tune = ctx.profile.recipe.tune
    return (ctx.target.runtime == "onnxruntime-cpu" and tune.enabled and tune.mixed_precision and ctx.metric.name == "accuracy"
            and ctx.profile.budgets.quantize_accuracy_drop_pt is not None)


def applies(ctx: EngineContext) -> bool:
    """`configured`, and the evaluation data has labels (without them the tuner judges agreement, and searches itself)."""
    return configured(ctx) and ctx.eval_feeds.labels is not None


def mixed_key(ctx: EngineContext) -> dict[str, Any] | None:
    """What the quantize stage's search depends on, for its cache key (None where it cannot run; the
    data, labels included, is in the key already)."""
    if not configured(ctx):
        return None
    tune = ctx.profile.recipe.tune
    return {"max_ops": tune.mixed_precision_max_ops, "max_float": tune.mixed_precision_max_float,
            "session": ctx.target.session.model_dump(), "budget": ctx.profile.budgets.quantize_accuracy_drop_pt}


def mixed_fallback(ctx: EngineContext, fp32: Path, out: Path, metrics: dict[str, Metric]) -> tuple[dict[str, Metric], list[str]]:
    """When `applies` and the INT8 graph `out`/student_int8.onnx broke quantize_accuracy_drop_pt: the
    search; its smallest holding step replaces student_int8.onnx (metrics measured again). Returns
    the metrics and notes (unchanged metrics and no notes when nothing ran)."""
    from edgekd.backends.ort.mixed_search import MixedInputs, search
    from edgekd.graph.decoder import has_kv_cache

    key, budget = metric_key(ctx, "int8"), ctx.profile.budgets.quantize_accuracy_drop_pt
    int8 = metrics[key].value if key in metrics else None
    if not applies(ctx) or int8 is None or has_kv_cache(fp32):
        return metrics, []
    fp32_value = top1_accuracy(ctx, fp32)
    if fp32_value - int8 <= budget:
        return metrics, []
    path, source = out / "student_int8.onnx", out / FUSED if (out / FUSED).is_file() else fp32
    work = out / ".mixed"
    work.mkdir()
    try:
        mixed = search(ctx, MixedInputs(fp32, source, work))  # fp32 scored there, in the same session settings as every step
        record = {**mixed.record, "trigger": (f"quantize: the static INT8 graph's accuracy {int8:.2f}% is {fp32_value - int8:.2f} pt below "
                                              f"fp32 > quantize_accuracy_drop_pt {budget}")}
        if not mixed.variants:
            record["how"] += ": student_int8.onnx stays the full INT8 graph (QAD next where the profile enables it, else the budget stops the build)"
        if mixed.variants:
            _, _, model, _ = mixed.variants[0]
            shutil.copyfile(model, path)
            step = next(s for s in record["steps"] if s.get("model") == str(model))
            record["kept_in_float"] = step["float_ops"]
            metrics = {**metrics, **quality_metrics(ctx, "int8", ortb.predict_file(path, ctx.eval_feeds.arrays), fp32,
                                                    ortb.runtime_description() + f", {step['k']} op(s) kept in float (mixed precision)")}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for step in record.get("steps", []):
        step.pop("model", None)
    (out / MIXED_JSON).write_text(json.dumps(record, indent=1))
    kept = record.get("kept_in_float", [])
    return metrics, [f"mixed precision: static INT8 lost {fp32_value - int8:.2f} pt > quantize_accuracy_drop_pt {budget}; "
                     + (f"kept {len(kept)} op(s) in float ({', '.join(kept)}): INT8 accuracy {metrics[key].value:.2f}% "
                        if kept else "no step held the budget within mixed_precision_max_float: the INT8 graph stays the full one ")
                     + f"({len(record['steps']) - 1} step(s), sensitivity of {len(record['sensitivity'])} op(s); {MIXED_JSON})"]


def top1_accuracy(ctx: EngineContext, model: Path) -> float:
    """Top-1 accuracy (points) of `model` on the labelled evaluation data, as the quantize stage measures it."""
    from edgekd.pipeline.evaluation import top1_pt

    return top1_pt(ortb.predict_file(model, ctx.eval_feeds.arrays), ctx.eval_feeds.labels)
