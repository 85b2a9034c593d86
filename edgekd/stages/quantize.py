"""quantize: static INT8 Q/DQ for the target (onnxruntime.quantization; QNN's own preparation for HTP),
calibrated on the calibration data; quantization-aware distillation when PTQ breaks the budget."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.ort import session as ortb
from edgekd.backends.quality import quality_metrics
from edgekd.distill.weights import save_weights
from edgekd.graph import provenance
from edgekd.graph.decoder import has_kv_cache, split_calibration
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Files, Outcome, Stage, size_metric
from edgekd.stages.common import (
    build_student,
    data_key,
    metric_key,
    quality_metric,
    teacher_of_student,
)
from edgekd.stages.context import Context
from edgekd.stages.export import export_student
from edgekd.stages.mixed_quantize import mixed_fallback, mixed_key

ENTROPY_NOTE = ("entropy: quantize_static gives its entropy calibrator 128 histogram bins and 128 quantized bins "
                "(not settable through its API), so the KL search has one candidate and picks the same range as minmax")


def _quantize(ctx: EngineContext, fp32: Path, path: Path, calib: dict[str, np.ndarray]) -> tuple[list[str], list[str], dict[str, Metric]]:
    """Quantize `fp32` for the target into `path` (after edgekd.graph.legalize's exact rewrites; on
    x86, a transformer's fusions: edgekd.backends.ort.transformer); returns the rule violations of
    the result, a note per rewrite or fusion step, and the fusion's parity metrics."""
    import tempfile

    import onnx

    from edgekd.graph.legalize import legalize
    from edgekd.graph.quant_rules import qdq_violations
    from edgekd.graph.quantize import quantize_int8
    from edgekd.graph.transformer import MASK_FLOOR

    cfg, tq = ctx.quantize_config, ctx.quant_recipe
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".legal-") as tmp:
        legal = Path(tmp) / fp32.name
        rewrites = legalize(fp32, legal, ctx.model_inputs)
        if ctx.target.runtime == "qnn-htp":
            from edgekd.backends.qnn.quantize import quantize_for_htp
            from edgekd.backends.qnn.rules import check_htp_rules

            qnn = ctx.qnn_config
            floors = quantize_for_htp(legal, path, calib, qnn, cfg.calibrate_method, ctx.model_inputs)
            wide = ("uint16",) if qnn.activation_type == "uint8" and qnn.uint16_activation_ops else ()
            model = onnx.load(str(path))
            floor = (f"attention masks: the mask and the masked scores of {floors} Softmax input(s) quantized on [-{MASK_FLOOR:g}, max] "
                     "(a padded position stays masked whatever masks the calibration data had; edgekd.graph.transformer)")
            notes = [floor] if floors else []
            return qdq_violations(model, tq, wide) + check_htp_rules(model), [*rewrites, *notes], {}
        fusion = None
        if ctx.target.runtime == "onnxruntime-cpu" and has_kv_cache(legal):
            from edgekd.graph.quantize import quantize_dynamic_int8

            quantize_dynamic_int8(legal, path, tq, op_types=("MatMul", "Gemm"))
            return qdq_violations(onnx.load(str(path)), tq), [*rewrites, DECODER_NOTE], {}
        if ctx.target.runtime == "onnxruntime-cpu":
            from edgekd.backends.ort.transformer import fuse_for_cpu

            fusion = fuse_for_cpu(ctx, legal, path.parent)
        cached = has_kv_cache(legal)
        if cached:  # calibrate on decode steps with a real cache (an empty past gives its Q/DQ no range)
            calib = split_calibration(legal, calib)
        kept = quantize_int8(fusion.model if fusion else legal, path, calib, cfg, tq, mask_inputs=mask_inputs(ctx))
    notes, metrics = (fusion.notes, fusion.metrics) if fusion else ([], {})
    if cached:
        notes = [*notes, CACHE_CALIBRATION_NOTE]
    if kept:
        notes = [*notes, (f"attention-mask path kept in float ({len(kept)} nodes: the mask arithmetic, each attention's score Add, "
                          "Softmax and probabilities x values MatMul): quantized, a padded mask would not mask and probabilities "
                          "would clip or round (edgekd.graph.transformer)")]
    return qdq_violations(onnx.load(str(path)), tq), [*rewrites, *notes], metrics


DECODER_NOTE = ("decoder with a KV cache on x86: dynamic INT8 of the MatMul/Gemm weights (quantize_dynamic: int8 weights, "
                "activations quantized at run time, no calibration; the embedding stays float) instead of static Q/DQ, whose calibration cannot see cached keys/values (the past "
                "inputs are empty in a full-sequence forward); the compile stage's tuner also measures MatMulNBits "
                "int4/int8 weight-only and fp32 and keeps the fastest within the perplexity budget")


CACHE_CALIBRATION_NOTE = ("decoder with a KV cache: calibrated on decode steps, each calibration row's first half run by the fp32 "
                          "graph for its key/values, its second half fed with that cache as past (cached keys/values get real ranges)")


def mask_inputs(ctx: EngineContext) -> tuple[str, ...]:
    """The model's attention-mask inputs (their path to each Softmax is not quantized like the rest)."""
    return tuple(i.name for i in ctx.model_inputs.inputs if i.role == "attention_mask")


def fp32_quality(ctx: EngineContext, model: Path) -> float | None:
    """The fp32 graph's task metric the quantize stage compares PTQ with (tests force the QAD trigger here)."""
    return quality_metric(ctx, ortb.predict_file(model, ctx.eval_feeds.arrays), "").value


def _ptq_loss(ctx: EngineContext, fp32_value: float | None, int8: Metric) -> tuple[float, float] | None:
    """(how much PTQ lost in the metric's budget unit, the budget) when it broke the quantize budget
    of the task's metric (quantize_accuracy_drop_pt, quantize_perplexity_increase_pct); else None."""
    budget = getattr(ctx.profile.budgets, f"quantize_{ctx.metric.degradation_name}", None)
    if budget is None or fp32_value is None or int8.value is None:
        return None
    lost = ctx.metric.degradation(fp32_value, int8.value)
    return (lost, budget) if lost > budget else None


def _int8_metrics(ctx: EngineContext, fp32: Path, path: Path, after: str = "") -> dict[str, Metric]:
    return quality_metrics(ctx, "int8", ortb.predict_file(path, ctx.eval_feeds.arrays), fp32, ortb.runtime_description() + after)


def _quantize_notes(ctx: EngineContext, samples: int) -> list[str]:
    cfg, tq = ctx.quantize_config, ctx.quant_recipe
    return [f"static QDQ: activations {tq.activation_type}, weights {tq.weight_type}, per-channel {tq.per_channel}, "
            f"reduce_range {tq.reduce_range}, symmetric activations {tq.symmetric_activations}, "
            f"{'static shapes ' + ctx.model_inputs.describe() + ', ' if tq.static_batch else ''}{cfg.calibrate_method} calibration "
            f"on {samples} of {ctx.calib_feeds.description}", *([ENTROPY_NOTE] if cfg.calibrate_method == "entropy" else []),
            *_mixed_note(ctx)]


def _mixed_note(ctx: EngineContext) -> list[str]:
    if ctx.target.runtime != "qnn-htp" or ctx.qnn_config.activation_type != "uint8" or not ctx.qnn_config.uint16_activation_ops:
        return []
    return [(f"HTP mixed precision: uint16 activations in and out of {', '.join(ctx.qnn_config.uint16_activation_ops)} (and the "
             "Add/Sub/Mul/Div feeding each), converted to uint8 for other consumers; uint8 elsewhere ([qnn] uint16_activation_ops)")]


def run_quantize(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    from edgekd.graph.quantize import calibration_rows

    calib = calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config)
    path = out / "student_int8.onnx"
    violations, rewrites, fusion = _quantize(ctx, inputs["student.onnx"], path, calib)
    metrics = {**fusion, **_int8_metrics(ctx, inputs["student.onnx"], path)}
    notes = [*rewrites, *([] if DECODER_NOTE in rewrites else _quantize_notes(ctx, len(next(iter(calib.values())))))]
    metrics, mixed = mixed_fallback(ctx, inputs["student.onnx"], out, metrics)  # x86: ops kept in float until the budget holds, before QAD
    notes += mixed
    qad, key, m = ctx.profile.recipe.qad, metric_key(ctx, "int8"), ctx.metric
    broke = _ptq_loss(ctx, fp32_quality(ctx, inputs["student.onnx"]), metrics[key]) if qad.enabled and isinstance(ctx, Context) else None
    if broke is not None:
        ptq = metrics[key]
        qad_model = run_qad(ctx, inputs, out)
        violations, _, fusion = _quantize(ctx, qad_model, path, calib)
        metrics = {**fusion, **_int8_metrics(ctx, qad_model, path, ", after QAD"),
                   f"qad.ptq_{m.name}": Metric(ptq.value, m.unit, "measured", f"PTQ of the distilled student: {ptq.how}")}
        notes.append(f"PTQ's {m.degradation_name} {broke[0]:.2f} > budget {broke[1]}: quantization-aware distillation ({qad.epochs} "
                     f"epochs, lr {qad.lr}) took INT8 {m.name} from {ptq.value:.2f} (PTQ) to {metrics[key].value:.2f} (QAD)")
    for model in sorted(out.glob("*.onnx")):  # student_int8.onnx (and student_qad.onnx when QAD ran)
        provenance.stamp_onnx(model, ctx.provenance_props("quantize"))
    metrics["int8.size_mb"] = size_metric(path, "student_int8.onnx")
    metrics["int8.rule_violations"] = Metric(len(violations), "", "measured", "Q/DQ nodes checked against the target's [quantize] recipe (types, symmetry; HTP: static shapes, no Loop/If)")
    return Outcome(metrics, [*(f"rule violation: {v}" for v in violations[:20]), *notes])



def run_qad(ctx: Context, inputs: dict[str, Path], out: Path) -> Path:
    """Quantization-aware distillation of the distilled student (edgekd.distill.qad): fake quantization for
    the target's recipe, Hinton KD against the teacher's memory-mapped cached logits, the train split
    streamed through the task (no augmentation). Returns the float QAD student exported by the task,
    for the quantize stage to quantize again."""
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.qad import QadSettings, qad_finetune
    from edgekd.distill.weights import load_weights

    d, qad = ctx.project.distill, ctx.profile.recipe.qad
    student = load_weights(build_student(ctx, inputs["student.json"])[0], inputs["student.safetensors"], "student")
    source = teacher_of_student(ctx, inputs)
    logits, _ = cached_teacher_logits(source, ctx.data_source, ctx.cache_root / "teacher-logits")
    settings = QadSettings(qad.epochs, qad.lr, d.batch_size, d.temperature, d.alpha, d.seed)
    tuned = qad_finetune(student, ctx.train_data, logits, ctx.quant_recipe, settings)
    save_weights(tuned, out / "student_qad.safetensors")
    path = out / "student_qad.onnx"
    export_student(ctx, tuned, path)
    return path



def _quantize_key(c: EngineContext) -> dict[str, Any]:
    key = {"quantize": c.quantize_config.model_dump(), "target": c.quant_recipe.model_dump(),
           "qad": c.profile.recipe.qad.model_dump(), "qad_trigger": c.profile.budgets.quantize_accuracy_drop_pt,
           "qnn": c.qnn_config.model_dump() if c.target.qnn else None, "mixed_precision": mixed_key(c), **data_key(c)}
    if isinstance(c, Context):  # QAD fine-tunes with the distillation settings
        key["distill"] = c.project.distill.model_dump()
    return key


# the stages from here on are shared with `edgekd compile` (edgekd.stages.import_model): "name?" inputs are a
# distillation build's only (QAD needs the student's weights and the teacher; bench times the teacher)
QUANTIZE = Stage("quantize", "static INT8 QDQ with onnxruntime.quantization, calibrated on the calibration data (QAD if PTQ breaks the budget and the profile allows)",
                 ("student.onnx", "student.json?", "student.safetensors?", "teacher.json?", "teacher.safetensors?", "assistant.json?",
                  "assistant.safetensors?"), ("student_int8.onnx",), ("torch", "onnx", "onnxruntime", "onnxruntime-qnn"),
                 _quantize_key, run_quantize)
