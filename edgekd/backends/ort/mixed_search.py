"""Accuracy-aware mixed precision for the x86 tuner: when every INT8 candidate breaks the quantize
accuracy budget, measure each quantizable op's sensitivity (the accuracy drop of the graph with only
that op quantized), then keep the most sensitive ops in float, k = 1, 2, 4, ... and then bisecting
down to the smallest k that holds the budget. That step's graph joins the tuner's candidates (timed
in the same interleaved run as the others), so fp32 is kept only when it is faster or nothing holds.

The graphs come from edgekd.graph.mixed_precision (one preparation, one calibration, the target's
recipe); accuracy is measured as the tuner measures it (top-1 on labelled evaluation data, else
the expected top-1 accuracy with the fp32 graph's softmax as the label distribution)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.config.target import SessionConfig

if TYPE_CHECKING:
    from edgekd.backends.ort.tune import Judged, Variant
    from edgekd.graph.mixed_precision import PartialQuantizer, QuantOp
    from edgekd.pipeline.context import EngineContext as Context

QUANT_FORMAT = "qdq-mixed-k{k}"  # the variant's quant format: k ops (or groups) kept in float


@dataclass(frozen=True)
class MixedInputs:
    """What the search works on: the fp32 graph accuracy is checked against, the graph it quantizes
    (a transformer's fused graph, else the fp32 one), a scratch folder."""

    fp32: Path
    source: Path
    work: Path


@dataclass
class Mixed:
    """The search's record (tuning["mixed_precision"]) and the variants it adds to the tuner's, as
    tune.Variant's fields (precision, quant format, model, how): tune makes the Variants (no import cycle)."""

    record: dict[str, Any]
    variants: list[tuple[str, str, Path, str]] = field(default_factory=list)


def mixed_precision(ctx: Context, inputs: MixedInputs, variants: list[Variant], judged: Judged) -> Mixed | None:
    """The search when it is on ([recipe.tune] mixed_precision) and every INT8 candidate breaks the
    quantize budget of the task's metric; None when it does not run because INT8 holds (or there is
    nothing to search: no INT8 candidate, no budget)."""
    from edgekd.graph.decoder import has_kv_cache

    int8 = [k for k, _ in judged.rows.items() if any(v.name == k[0] and v.precision == "int8" for v in variants)]
    if not ctx.profile.recipe.tune.mixed_precision or not int8 or not all(_breaks(ctx, judged, judged.rows[k]) for k in int8):
        return None
    if ctx.metric.name != "accuracy" or has_kv_cache(inputs.fp32):
        return Mixed({"ran": False, "how": f"not supported for this model: the search measures top-1 accuracy (or agreement) of static "
                                           f"Q/DQ graphs, and this is a {ctx.metric.name} model"
                                           f"{' with a KV cache (dynamic/weight-only INT8)' if has_kv_cache(inputs.fp32) else ''}"})
    if "qdq" not in ctx.target.tune.quant_formats:
        return Mixed({"ran": False, "how": "not run: the target's [tune] quant_formats has no static Q/DQ ('qdq') to keep ops of in float"})
    mixed = search(ctx, inputs, judged.fp32["accuracy"])
    if not mixed.variants:
        mixed.record["how"] += ": fp32 stands"
    mixed.record["trigger"] = (f"compile: every INT8 candidate of the tuner ({len(int8)} variant x numerics settings) broke the quantize "
                               f"budget, {judged.how}")
    return mixed


def _breaks(ctx: Context, judged: Judged, row: dict[str, Any]) -> bool:
    """Whether a (variant, level)'s quality breaks the quantize budget of the task's metric."""
    from edgekd.backends.ort.decoder_tune import metric_problems

    if ctx.metric.name != "accuracy":
        return bool(metric_problems(ctx, row.get(ctx.metric.name), judged.fp32.get(ctx.metric.name)))
    budget = ctx.profile.budgets.quantize_accuracy_drop_pt
    return budget is not None and judged.fp32["accuracy"] - row["accuracy"] > budget


def _scorer(ctx: Context, inputs: MixedInputs) -> tuple[Callable[[Path], float], str]:
    """accuracy(model) as the tuner measures it (in the target's [session]), and what it is."""
    from edgekd.backends.ort.session import predict_file
    from edgekd.pipeline.evaluation import expected_top1_pt, top1_pt

    feeds, session = ctx.eval_feeds, ctx.target.session
    if feeds.labels is not None:
        return (lambda m: top1_pt(predict_file(m, feeds.arrays, session), feeds.labels),
                f"top-1 accuracy on {feeds.description}")
    reference = predict_file(inputs.fp32, feeds.arrays, SessionConfig(graph_optimization_level="basic"))
    return (lambda m: expected_top1_pt(predict_file(m, feeds.arrays, session), reference),
            f"no labels: the expected top-1 accuracy with the fp32 graph's softmax as the label distribution, on {feeds.description}")


def search(ctx: Context, inputs: MixedInputs, fp32_value: float | None = None) -> Mixed:
    """Sensitivity, then the steps (module docstring); `fp32_value`: the fp32 graph's accuracy as the
    caller measured it (None: measured here). The record says what ran; the variant, if any, is the
    smallest step that holds quantize_accuracy_drop_pt (which must be set)."""
    from edgekd.graph.mixed_precision import PartialQuantizer, PartialSettings, grouped
    from edgekd.graph.quantize import calibration_rows

    cfg, budget, start = ctx.profile.recipe.tune, ctx.profile.budgets.quantize_accuracy_drop_pt, time.perf_counter()
    work = inputs.work / "mixed"
    work.mkdir(exist_ok=True)
    calib = calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config)
    pq = PartialQuantizer(inputs.source, work, PartialSettings(calib, ctx.quantize_config, ctx.quant_recipe, _masks(ctx)))
    score, what = _scorer(ctx, inputs)
    fp32_value = score(inputs.fp32) if fp32_value is None else fp32_value
    every = pq.quantizable()
    ops = grouped(every, cfg.mixed_precision_max_ops)
    table = _sensitivity(pq, ops, score, fp32_value)
    full = score(pq.full_model)
    steps = [{"k": 0, "float_ops": [], "accuracy": full, "drop_pt": fp32_value - full, "holds": fp32_value - full <= budget,
              "variant": None, "p90_ms": None}]
    limit = max(0, int(cfg.mixed_precision_max_float * len(ops)))
    found = _steps(pq, [ops[i] for i in table["order"]], limit, Criterion(fp32_value, budget), score, steps)
    variants = [] if found is None else [_variant(found, steps, inputs.source, len(ops))]
    grouping = (f"{len(every)} quantizable ops in {len(ops)} groups of consecutive ops (more than mixed_precision_max_ops "
                f"{cfg.mixed_precision_max_ops}): a group is kept in float whole" if len(ops) < len(every) else f"{len(every)} quantizable ops")
    record = {
        "ran": True, "budget": f"quantize_accuracy_drop_pt {budget}", "fp32_accuracy": fp32_value, "accuracy_is": what,
        "sensitivity": table["rows"], "steps": steps, "kept_in_float": [],
        "evaluations": len(ops) + len(steps),
        "seconds": time.perf_counter() - start,  # wall clock of the whole search in the build process (time.perf_counter)
        "how": (f"{grouping} (those onnxruntime's quantize_static "
                f"quantizes, less any attention-mask path); calibrated once ({ctx.quantize_config.calibrate_method} on {len(next(iter(calib.values())))} "
                f"rows of {ctx.calib_feeds.description}, the quantize stage's recipe), ranges reused by every graph; sensitivity = "
                f"accuracy drop vs fp32 of the graph with only that op (group) quantized, {what}, {len(ops)} evaluations; then the k most "
                f"sensitive kept in float, k = 1, 2, 4, ... up to {limit} (mixed_precision_max_float {cfg.mixed_precision_max_float} of "
                f"{len(ops)}), bisecting to the smallest k that holds; "
                + (f"the smallest holding step (k = {found}) is timed with the other candidates" if found is not None
                   else "no step held the budget within that limit")),
    }
    return Mixed(record, variants)


def _masks(ctx: Context) -> tuple[str, ...]:
    """The model's attention-mask inputs (their path stays float, as in the quantize stage)."""
    return tuple(i.name for i in ctx.model_inputs.inputs if i.role == "attention_mask")


def _sensitivity(pq: PartialQuantizer, ops: list[QuantOp], score: Callable[[Path], float], fp32_value: float) -> dict[str, Any]:
    """Each op's (group's) drop with only it quantized; rows most sensitive first (ties: graph order)."""
    drops = [fp32_value - score(pq.quantize(pq.work / "only.onnx", only=op.nodes)) for op in ops]
    order = sorted(range(len(ops)), key=lambda i: (-drops[i], i))
    rows = [{"op": ops[i].name, "op_type": ops[i].op_type, "drop_pt": drops[i], "nodes": len(ops[i].nodes)} for i in order]
    return {"order": order, "rows": rows}


@dataclass(frozen=True)
class Criterion:
    fp32_accuracy: float
    budget_pt: float

    def holds(self, accuracy: float) -> bool:
        return self.fp32_accuracy - accuracy <= self.budget_pt


def _steps(pq: PartialQuantizer, ranked: list[QuantOp], limit: int, crit: Criterion,
           score: Callable[[Path], float], steps: list[dict[str, Any]]) -> int | None:
    """Keep the top k of `ranked` in float for k = 1, 2, 4, ... and `limit` (the last), then bisect between
    the last failing and the first holding k; each step appended to `steps` (its model written).
    Returns the smallest holding k found, or None."""
    def step(k: int) -> bool:
        path = pq.quantize(pq.work / f"student_int8_{QUANT_FORMAT.format(k=k)}.onnx",
                           keep_float=[n for op in ranked[:k] for n in op.nodes])
        acc = score(path)
        steps.append({"k": k, "float_ops": [op.name for op in ranked[:k]], "accuracy": acc, "drop_pt": crit.fp32_accuracy - acc,
                      "holds": crit.holds(acc), "variant": None, "p90_ms": None, "model": str(path)})
        return steps[-1]["holds"]

    low, k = 0, min(1, limit)
    while k > low and not step(k):  # k = 1, 2, 4, ..., and limit itself last
        low, k = k, min(k * 2, limit)
    if k == low:  # limit reached (or 0) without a step that holds
        return None
    high = k
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if step(mid) else (mid, high)
    return high


def _variant(k: int, steps: list[dict[str, Any]], source: Path, total: int) -> tuple[str, str, Path, str]:
    step = next(s for s in steps if s["k"] == k and s["holds"])
    fmt = QUANT_FORMAT.format(k=k)
    step["variant"] = f"int8-{fmt}"
    how = (f"static Q/DQ of {source.name} with {k} of {total} quantizable ops (or groups) kept in float: "
           f"{', '.join(step['float_ops'])} (accuracy-aware mixed precision: tuning's mixed_precision)")
    return ("int8", fmt, Path(step["model"]), how)


def finish(mixed: Mixed | None, rows: list[dict[str, Any]], chosen: int) -> dict[str, Any]:
    """tuning's "mixed_precision" entry (empty when the search did not run): each timed step's best
    p90 from the tuning rows, and the ops kept in float in the chosen engine."""
    if mixed is None:
        return {}
    record = mixed.record
    for step in record.get("steps", []):
        timed = [r["p90_ms"] for r in rows if step["variant"] is not None and r["variant"] == step["variant"]]
        step["p90_ms"] = float(np.min(timed)) if timed else None
        step.pop("model", None)
    best = rows[chosen]["variant"]
    record["kept_in_float"] = next((s["float_ops"] for s in record.get("steps", []) if s["variant"] == best), [])
    return {"mixed_precision": record}
