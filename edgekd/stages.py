"""The stages `build` walks, in order. Each is a small function from input artefacts (files of
earlier stages) to output files in a scratch folder, plus metrics that say how they were obtained.

search -> teacher -> assistants -> distill -> export -> quantize -> check -> compile -> evaluate -> bench

The engine stages (quantize onwards) read only the EngineContext seam (model inputs, calibration and
evaluation data as named inputs), so `edgekd compile` walks them too (edgekd.compile_stages).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd import backends, evaluation, provenance
from edgekd.backends import onnxruntime as ortb
from edgekd.backends.base import BUNDLE_DIR, ENGINE_DIR, ENGINE_JSON
from edgekd.context import Context, EngineContext
from edgekd.distill.assistants import assistants_key, run_assistants
from edgekd.distill.steps import build_student, run_distill, run_search, run_teacher, search_key, teacher_key
from edgekd.distill.weights import load_weights
from edgekd.results import Metric

Files = dict[str, Path]
ENTROPY_NOTE = ("entropy: quantize_static gives its entropy calibrator 128 histogram bins and 128 quantized bins "
                "(not settable through its API), so the KL search has one candidate and picks the same range as minmax")


@dataclass
class Outcome:
    metrics: dict[str, Metric] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]  # files it must write; "name/" is a folder it may write
    tools: tuple[str, ...]  # distributions whose versions enter the cache key
    config: Callable[[Any], dict[str, Any]]  # the resolved settings that enter the cache key (from the context)
    run: Callable[[Any, Files, Path], Outcome]  # (context, input files, scratch folder)


def accuracy_metric(ctx: EngineContext, outputs: np.ndarray, where: str) -> Metric:
    """Top-1 accuracy of `outputs` on the build's evaluation data (not available without labels)."""
    return evaluation.accuracy_metric(ctx.eval_feeds, outputs, where)


def size_metric(path: Path, what: str) -> Metric:
    return Metric(path.stat().st_size / 1e6, "MB", "measured", f"file size of {what} (MB = 10^6 bytes)")


# ------------------------------------------------------------------------------------ stages


def run_export(ctx: Context, inputs: Files, out: Path) -> Outcome:
    from edgekd.distill.trainer import predict
    from edgekd.export import export_onnx, parity

    student = load_weights(build_student(ctx, inputs["student.json"])[0], inputs["student.safetensors"], "student")
    path = out / "student.onnx"
    export_onnx(student, ctx.data.input_shape, path, ctx.target.opset)
    provenance.stamp_onnx(path, provenance.props(ctx, "export"))
    test_x = ctx.data.test.x
    onnx_logits = ortb.predict(ortb.open_session(path), ctx.eval_feeds.arrays)
    check = parity(predict(student, test_x), onnx_logits)
    where = ortb.runtime_description()
    return Outcome({
        "export.parity_max_abs_diff": Metric(check.max_abs_diff, "", "measured", f"max |logit difference| over {check.samples} test samples, {where} vs torch"),
        "onnx_fp32.accuracy": accuracy_metric(ctx, onnx_logits, where),
        "onnx_fp32.size_mb": size_metric(path, "student.onnx"),
    }, [f"exported with torch.onnx (dynamo), opset {ctx.target.opset}, dynamic batch", f"parity: {check.describe()}"])


def _quantize(ctx: EngineContext, fp32: Path, path: Path, calib: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """Quantize `fp32` for the target into `path` (after edgekd.graph.legalize's exact rewrites);
    returns the rule violations of the result and a note per rewrite."""
    import tempfile

    import onnx

    from edgekd.graph.legalize import legalize
    from edgekd.quant_rules import qdq_violations
    from edgekd.quantize import quantize_int8

    cfg, tq = ctx.quantize_config, ctx.quant_recipe
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".legal-") as tmp:
        legal = Path(tmp) / fp32.name
        rewrites = legalize(fp32, legal, ctx.model_inputs)
        if ctx.target.runtime == "qnn-htp":
            from edgekd.backends.qnn import check_htp_rules, quantize_for_htp

            quantize_for_htp(legal, path, calib, ctx.qnn_config, cfg.calibrate_method, ctx.model_inputs)
            return qdq_violations(onnx.load(str(path)), tq) + check_htp_rules(onnx.load(str(path))), rewrites
        quantize_int8(legal, path, calib, cfg, tq)
    return qdq_violations(onnx.load(str(path)), tq), rewrites


def _accuracy_pt(ctx: EngineContext, model: Path) -> float | None:
    """The fp32 accuracy the quantize stage compares PTQ with (tests force the QAD trigger here)."""
    return accuracy_metric(ctx, ortb.predict_file(model, ctx.eval_feeds.arrays), "").value


def quality_metrics(ctx: EngineContext, prefix: str, outputs: np.ndarray, fp32: Path, where: str) -> dict[str, Metric]:
    """`prefix`.accuracy on the evaluation data; without labels also `prefix`.agreement_pct, the top-1
    agreement with the fp32 graph (a fidelity check, said so)."""
    feeds = ctx.eval_feeds
    metrics = {f"{prefix}.accuracy": accuracy_metric(ctx, outputs, where)}
    if feeds.labels is None:
        reference = ortb.predict_file(fp32, feeds.arrays)
        what = "the INT8 graph" if prefix == "int8" else f"the {prefix}"
        metrics[f"{prefix}.agreement_pct"] = evaluation.agreement_metric(feeds, outputs, reference, what, where)
    return metrics


def _int8_metrics(ctx: EngineContext, fp32: Path, path: Path, after: str = "") -> dict[str, Metric]:
    return quality_metrics(ctx, "int8", ortb.predict_file(path, ctx.eval_feeds.arrays), fp32, ortb.runtime_description() + after)


def _quantize_notes(ctx: EngineContext, samples: int) -> list[str]:
    cfg, tq = ctx.quantize_config, ctx.quant_recipe
    return [f"static QDQ: activations {tq.activation_type}, weights {tq.weight_type}, per-channel {tq.per_channel}, "
            f"reduce_range {tq.reduce_range}, symmetric activations {tq.symmetric_activations}, "
            f"{'static shapes ' + ctx.model_inputs.describe() + ', ' if tq.static_batch else ''}{cfg.calibrate_method} calibration "
            f"on {samples} of {ctx.calib_feeds.description}", *([ENTROPY_NOTE] if cfg.calibrate_method == "entropy" else [])]


def run_quantize(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    from edgekd.quantize import calibration_rows

    calib = calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config)
    path = out / "student_int8.onnx"
    violations, rewrites = _quantize(ctx, inputs["student.onnx"], path, calib)
    metrics = _int8_metrics(ctx, inputs["student.onnx"], path)
    notes = [*rewrites, *_quantize_notes(ctx, len(next(iter(calib.values()))))]
    budget, qad = ctx.profile.budgets.quantize_accuracy_drop_pt, ctx.profile.recipe.qad
    fp32_accuracy = _accuracy_pt(ctx, inputs["student.onnx"]) if qad.enabled else None
    if isinstance(ctx, Context) and budget is not None and fp32_accuracy is not None and metrics["int8.accuracy"].value is not None \
            and fp32_accuracy - metrics["int8.accuracy"].value > budget:
        from edgekd.distill.steps import run_qad

        ptq = metrics["int8.accuracy"]
        qad_model = run_qad(ctx, inputs, out)
        violations, _ = _quantize(ctx, qad_model, path, calib)
        metrics = {**_int8_metrics(ctx, qad_model, path, ", after QAD"),
                   "qad.ptq_accuracy": Metric(ptq.value, "%", "measured", f"PTQ of the distilled student: {ptq.how}")}
        notes.append(f"PTQ lost {fp32_accuracy - ptq.value:.2f} pt > budget {budget} pt: quantization-aware distillation ({qad.epochs} "
                     f"epochs, lr {qad.lr}) took INT8 accuracy from {ptq.value:.2f}% (PTQ) to {metrics['int8.accuracy'].value:.2f}% (QAD)")
    for model in sorted(out.glob("*.onnx")):  # student_int8.onnx (and student_qad.onnx when QAD ran)
        provenance.stamp_onnx(model, ctx.provenance_props("quantize"))
    metrics["int8.size_mb"] = size_metric(path, "student_int8.onnx")
    metrics["int8.rule_violations"] = Metric(len(violations), "", "measured", "Q/DQ nodes checked against the target's [quantize] recipe (types, symmetry; HTP: static shapes, no Loop/If)")
    return Outcome(metrics, [*(f"rule violation: {v}" for v in violations[:20]), *notes])


def run_check(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    from edgekd.analysis.support import analyze

    report = analyze(inputs["student_int8.onnx"], ctx.target_file.name, ctx.target, inputs=ctx.model_inputs)
    (out / "support.json").write_text(json.dumps(report, indent=1))
    how = f"{report['accelerator']}; fallback: {report['fallback']}"
    off = [n for n in report["nodes"] if n["runs_on"] != "accelerator"]
    return Outcome({
        "check.unsupported_nodes": Metric(report["counts"]["unsupported"], "", "measured", how),
        "check.fallback_nodes_pct": Metric(100.0 * report["node_share_off"], "%", "measured", f"{len(off)} of {len(report['nodes'])} nodes; {how}"),
        "check.fallback_macs_pct": Metric(None, "%", "not available", report["macs_how"]) if report["macs_share_off"] is None else
        Metric(100.0 * report["macs_share_off"], "%", "measured", f"{report['macs_how']}; {how}"),
    }, [*report.get("notes", []), *(f"{n['name']} ({n['op_type']}) -> {n['runs_on']}: {n['reason']}" for n in off[:20])])


def run_compile(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    """The backend's compile from copies of the models stamped with the edgekd.* props (target included),
    so that what it copies or derives carries them; models it wrote without them are stamped after."""
    values = ctx.provenance_props("compile", target=True)
    with provenance.stamped_inputs(inputs, values) as stamped:
        outcome = _compile(ctx, stamped, out)
    provenance.restamp_outputs(out, values)
    return outcome


def _compile(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    return backends.get(ctx.target.runtime).compile(ctx, inputs["student_int8.onnx"], inputs["student.onnx"], out)


def run_evaluate(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    return backends.get(ctx.target.runtime).evaluate(ctx, inputs)


def run_bench(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    outcome = backends.get(ctx.target.runtime).bench(ctx, inputs, out)
    if ctx.profile.recipe.bench.compare:
        from edgekd.compare import compare

        result = json.loads((out / "bench.json").read_text())
        result["compare"] = compare(ctx, inputs, result, out)
        (out / "bench.json").write_text(json.dumps(result))
        outcome.notes += [f"{who}: p90 {'n/a' if p['p90_ms'] is None else format(p['p90_ms'], '.4g') + ' ms'} ({p['method']}: {p['how']})"
                          for who, p in result["compare"].items() if who != "engine"]
    return outcome


def _data(ctx: EngineContext) -> dict[str, Any]:
    return {"data": ctx.data_fingerprint, "inputs": ctx.model_inputs.key()}


def _quantize_key(c: EngineContext) -> dict[str, Any]:
    key = {"quantize": c.quantize_config.model_dump(), "target": c.quant_recipe.model_dump(),
           "qad": c.profile.recipe.qad.model_dump(), "qad_trigger": c.profile.budgets.quantize_accuracy_drop_pt,
           "qnn": c.qnn_config.model_dump() if c.target.qnn else None, **_data(c)}
    if isinstance(c, Context):  # QAD fine-tunes with the distillation settings
        key["distill"] = c.project.distill.model_dump()
    return key


SEARCH = Stage("search", "pick the student: the project's, or the largest family member that fits the latency and size budgets",
               (), ("student.json",), ("torch", "onnx", "onnxscript", "onnxruntime"), search_key, run_search)
TEACHER = Stage("teacher", "train the teacher on the train split (or load its checkpoint)",
                (), ("teacher.json",), ("torch", "safetensors", "onnxruntime"), teacher_key, run_teacher)
ASSISTANTS = Stage("assistants", "teacher-assistant chain: each assistant distilled from the previous link (each link cached)",
                   ("teacher.json", "teacher.safetensors?"), ("assistant.json",), ("torch", "safetensors"), assistants_key, run_assistants)
DISTILL = Stage("distill", "distill the student from the teacher (or the last assistant) with the configured losses",
                ("student.json", "teacher.json", "teacher.safetensors?", "assistant.json", "assistant.safetensors?"), ("student.safetensors",),
                ("torch", "safetensors", "onnxruntime"),
                lambda c: {"teacher": c.project.teacher.model_dump(), "distill": c.project.distill.model_dump(), **_data(c)}, run_distill)
EXPORT = Stage("export", "torch.onnx export + ONNX Runtime vs torch parity check",
               ("student.json", "student.safetensors"), ("student.onnx",), ("torch", "onnx", "onnxscript", "onnxruntime"),
               lambda c: {"opset": c.target.opset, **_data(c)}, run_export)
# the stages from here on are shared with `edgekd compile` (edgekd.compile_stages): "name?" inputs are a
# distillation build's only (QAD needs the student's weights and the teacher; bench times the teacher)
QUANTIZE = Stage("quantize", "static INT8 QDQ with onnxruntime.quantization, calibrated on the calibration data (QAD if PTQ breaks the budget and the profile allows)",
                 ("student.onnx", "student.json?", "student.safetensors?", "teacher.json?", "teacher.safetensors?", "assistant.json?",
                  "assistant.safetensors?"), ("student_int8.onnx",), ("torch", "onnx", "onnxruntime", "onnxruntime-qnn"),
                 _quantize_key, run_quantize)
CHECK = Stage("check", "op support: which nodes the target's runtime/accelerator runs, and what falls back",
              ("student_int8.onnx",), ("support.json",), ("onnx", "onnxruntime", "onnxruntime-qnn"),
              lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "inputs": c.model_inputs.key()}, run_check)
COMPILE = Stage("compile", "build the engine for the target's runtime and the deploy bundle (x86: tune the engine settings by measuring each)",
                ("student_int8.onnx", "student.onnx"), (ENGINE_JSON, ENGINE_DIR + "/", BUNDLE_DIR + "/"), ("onnxruntime", "onnxruntime-qnn"),
                lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "qnn": c.qnn_config.model_dump() if c.target.qnn else None,
                           "host": c.host_fingerprint(), "tune": c.profile.recipe.tune.model_dump(), "quantize": c.quantize_config.model_dump(),
                           "budgets": c.profile.budgets.model_dump(), **_data(c)}, run_compile)
EVALUATE = Stage("evaluate", "accuracy of the engine on the held-out evaluation data",
                 (ENGINE_JSON, "student_int8.onnx", "student.onnx"), (), ("onnxruntime", "onnxruntime-qnn"),
                 lambda c: {"target": c.target.model_dump(), **_data(c)}, run_evaluate)
BENCH = Stage("bench", "SingleStream latency at batch 1, Offline throughput, per-op profile (measured here, or estimated for an absent device); teacher and fp32 student for comparison",
              (ENGINE_JSON, "student_int8.onnx", "support.json", "student.onnx", "teacher.json?", "teacher.safetensors?"), ("bench.json",),
              ("onnxruntime", "torch"),
              lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "bench": c.profile.recipe.bench.model_dump(),
                         "host": c.host_fingerprint(), "inputs": c.model_inputs.key()}, run_bench)
ENGINE_STAGES: tuple[Stage, ...] = (QUANTIZE, CHECK, COMPILE, EVALUATE, BENCH)
STAGES: tuple[Stage, ...] = (SEARCH, TEACHER, ASSISTANTS, DISTILL, EXPORT, *ENGINE_STAGES)
