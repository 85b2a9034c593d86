"""The stages `build` walks, in order. Each is a small function from input artefacts (files of
earlier stages) to output files in a scratch folder, plus metrics that say how they were obtained.

search -> teacher -> assistants -> distill -> export -> quantize -> check -> compile -> evaluate -> bench
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd import backends, provenance
from edgekd.backends import onnxruntime as ortb
from edgekd.backends.base import BUNDLE_DIR, ENGINE_DIR, ENGINE_JSON
from edgekd.context import Context
from edgekd.distill.assistants import assistants_key, run_assistants
from edgekd.distill.steps import build_student, run_distill, run_search, run_teacher, search_key, teacher_key
from edgekd.distill.weights import load_weights
from edgekd.export import INPUT_NAME
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
    config: Callable[[Context], dict[str, Any]]  # the resolved settings that enter the cache key
    run: Callable[[Context, Files, Path], Outcome]


def accuracy_pt(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean() * 100.0)


def accuracy_metric(ctx: Context, logits: np.ndarray, where: str) -> Metric:
    test = ctx.data.test
    return Metric(accuracy_pt(logits, test.y), "%", "measured", f"top-1 on the {len(test)} held-out test samples, {where}")


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
    onnx_logits = ortb.predict(ortb.open_session(path), test_x)
    check = parity(predict(student, test_x), onnx_logits)
    where = ortb.runtime_description()
    return Outcome({
        "export.parity_max_abs_diff": Metric(check.max_abs_diff, "", "measured", f"max |logit difference| over {check.samples} test samples, {where} vs torch"),
        "onnx_fp32.accuracy": accuracy_metric(ctx, onnx_logits, where),
        "onnx_fp32.size_mb": size_metric(path, "student.onnx"),
    }, [f"exported with torch.onnx (dynamo), opset {ctx.target.opset}, dynamic batch", f"parity: {check.describe()}"])


def _quantize(ctx: Context, fp32: Path, path: Path, samples: np.ndarray) -> list[str]:
    """Quantize `fp32` for the target into `path`; returns the rule violations of the result."""
    import onnx

    from edgekd.quant_rules import qdq_violations
    from edgekd.quantize import quantize_int8

    cfg, tq = ctx.project.quantize, ctx.quant_recipe
    if ctx.target.runtime == "qnn-htp":
        from edgekd.backends.qnn import check_htp_rules, quantize_for_htp

        quantize_for_htp(fp32, path, samples, INPUT_NAME, ctx.qnn_config, cfg.calibrate_method)
        return qdq_violations(onnx.load(str(path)), tq) + check_htp_rules(onnx.load(str(path)))
    quantize_int8(fp32, path, samples, INPUT_NAME, cfg, tq)
    return qdq_violations(onnx.load(str(path)), tq)


def _accuracy_pt(ctx: Context, model: Path) -> float:
    """The fp32 accuracy the quantize stage compares PTQ with (tests force the QAD trigger here)."""
    return ortb.accuracy_pt(model, ctx.data.test.x, ctx.data.test.y)


def run_quantize(ctx: Context, inputs: Files, out: Path) -> Outcome:
    from edgekd.quantize import calibration_samples

    cfg, tq = ctx.project.quantize, ctx.quant_recipe
    samples = calibration_samples(ctx.data.calib.x, cfg)
    path = out / "student_int8.onnx"
    violations = _quantize(ctx, inputs["student.onnx"], path, samples)
    where = ortb.runtime_description()
    metrics = {"int8.accuracy": accuracy_metric(ctx, ortb.predict(ortb.open_session(path), ctx.data.test.x), where)}
    notes = [f"static QDQ: activations {tq.activation_type}, weights {tq.weight_type}, per-channel {tq.per_channel}, "
             f"reduce_range {tq.reduce_range}, symmetric activations {tq.symmetric_activations}, "
             f"{'static batch ' + str(tq.static_batch) + ', ' if tq.static_batch else ''}{cfg.calibrate_method} calibration "
             f"on {len(samples)} samples of the calibration split", *([ENTROPY_NOTE] if cfg.calibrate_method == "entropy" else [])]
    budget, qad = ctx.profile.budgets.quantize_accuracy_drop_pt, ctx.profile.recipe.qad
    ptq_drop = _accuracy_pt(ctx, inputs["student.onnx"]) - metrics["int8.accuracy"].value
    if qad.enabled and budget is not None and ptq_drop > budget:
        from edgekd.distill.steps import run_qad

        qad_model = run_qad(ctx, inputs, out)
        violations = _quantize(ctx, qad_model, path, samples)
        ptq = metrics["int8.accuracy"]
        metrics["qad.ptq_accuracy"] = Metric(ptq.value, "%", "measured", f"PTQ of the distilled student: {ptq.how}")
        metrics["int8.accuracy"] = accuracy_metric(ctx, ortb.predict(ortb.open_session(path), ctx.data.test.x), where + ", after QAD")
        notes.append(f"PTQ lost {ptq_drop:.2f} pt > budget {budget} pt: quantization-aware distillation ({qad.epochs} epochs, lr {qad.lr}) "
                     f"took INT8 accuracy from {ptq.value:.2f}% (PTQ) to {metrics['int8.accuracy'].value:.2f}% (QAD)")
    for model in sorted(out.glob("*.onnx")):  # student_int8.onnx (and student_qad.onnx when QAD ran)
        provenance.stamp_onnx(model, provenance.props(ctx, "quantize"))
    metrics["int8.size_mb"] = size_metric(path, "student_int8.onnx")
    metrics["int8.rule_violations"] = Metric(len(violations), "", "measured", "Q/DQ nodes checked against the target's [quantize] recipe (types, symmetry; HTP: static shapes, no Loop/If)")
    return Outcome(metrics, [*(f"rule violation: {v}" for v in violations[:20]), *notes])


def run_check(ctx: Context, inputs: Files, out: Path) -> Outcome:
    from edgekd.analysis.support import analyze

    report = analyze(inputs["student_int8.onnx"], ctx.target_file.name, ctx.target)
    (out / "support.json").write_text(json.dumps(report, indent=1))
    how = f"{report['accelerator']}; fallback: {report['fallback']}"
    off = [n for n in report["nodes"] if n["runs_on"] != "accelerator"]
    return Outcome({
        "check.unsupported_nodes": Metric(report["counts"]["unsupported"], "", "measured", how),
        "check.fallback_nodes_pct": Metric(100.0 * report["node_share_off"], "%", "measured", f"{len(off)} of {len(report['nodes'])} nodes; {how}"),
        "check.fallback_macs_pct": Metric(100.0 * report["macs_share_off"], "%", "measured", f"MACs from the ONNX graph at batch 1; {how}"),
    }, [f"{n['name']} ({n['op_type']}) -> {n['runs_on']}: {n['reason']}" for n in off[:20]])


def run_compile(ctx: Context, inputs: Files, out: Path) -> Outcome:
    """The backend's compile from copies of the models stamped with the edgekd.* props (target included),
    so that what it copies or derives carries them; models it wrote without them are stamped after."""
    values = provenance.props(ctx, "compile", target=True)
    with provenance.stamped_inputs(inputs, values) as stamped:
        outcome = _compile(ctx, stamped, out)
    provenance.restamp_outputs(out, values)
    return outcome


def _compile(ctx: Context, inputs: Files, out: Path) -> Outcome:
    return backends.get(ctx.target.runtime).compile(ctx, inputs["student_int8.onnx"], inputs["student.onnx"], out)


def run_evaluate(ctx: Context, inputs: Files, out: Path) -> Outcome:
    return backends.get(ctx.target.runtime).evaluate(ctx, inputs)


def run_bench(ctx: Context, inputs: Files, out: Path) -> Outcome:
    outcome = backends.get(ctx.target.runtime).bench(ctx, inputs, out)
    if ctx.profile.recipe.bench.compare:
        from edgekd.compare import compare

        result = json.loads((out / "bench.json").read_text())
        result["compare"] = compare(ctx, inputs, result, out)
        (out / "bench.json").write_text(json.dumps(result))
        outcome.notes += [f"{who}: p90 {'n/a' if p['p90_ms'] is None else format(p['p90_ms'], '.4g') + ' ms'} ({p['method']}: {p['how']})"
                          for who, p in result["compare"].items() if who != "engine"]
    return outcome


def _data(ctx: Context) -> dict[str, Any]:
    return {"data": ctx.data_sha256}


STAGES: tuple[Stage, ...] = (
    Stage("search", "pick the student: the project's, or the largest family member that fits the latency and size budgets",
          (), ("student.json",), ("torch", "onnx", "onnxscript", "onnxruntime"), search_key, run_search),
    Stage("teacher", "train the teacher on the train split (or load its checkpoint)",
          (), ("teacher.json",), ("torch", "safetensors", "onnxruntime"), teacher_key, run_teacher),
    Stage("assistants", "teacher-assistant chain: each assistant distilled from the previous link (each link cached)",
          ("teacher.json", "teacher.safetensors?"), ("assistant.json",), ("torch", "safetensors"), assistants_key, run_assistants),
    Stage("distill", "distill the student from the teacher (or the last assistant) with the configured losses",
          ("student.json", "teacher.json", "teacher.safetensors?", "assistant.json", "assistant.safetensors?"), ("student.safetensors",), ("torch", "safetensors", "onnxruntime"),
          lambda c: {"teacher": c.project.teacher.model_dump(), "distill": c.project.distill.model_dump(), **_data(c)}, run_distill),
    Stage("export", "torch.onnx export + ONNX Runtime vs torch parity check",
          ("student.json", "student.safetensors"), ("student.onnx",), ("torch", "onnx", "onnxscript", "onnxruntime"),
          lambda c: {"opset": c.target.opset, **_data(c)}, run_export),
    Stage("quantize", "static INT8 QDQ with onnxruntime.quantization, calibrated on the calibration split (QAD if PTQ breaks the budget and the profile allows)",
          ("student.onnx", "student.json", "student.safetensors", "teacher.json", "teacher.safetensors?", "assistant.json",
           "assistant.safetensors?"), ("student_int8.onnx",),
          ("torch", "onnx", "onnxruntime", "onnxruntime-qnn"),
          lambda c: {"quantize": c.project.quantize.model_dump(), "target": c.quant_recipe.model_dump(),
                     "qad": c.profile.recipe.qad.model_dump(), "qad_trigger": c.profile.budgets.quantize_accuracy_drop_pt,
                     "distill": c.project.distill.model_dump(),
                     "qnn": c.qnn_config.model_dump() if c.target.qnn else None, **_data(c)}, run_quantize),
    Stage("check", "op support: which nodes the target's runtime/accelerator runs, and what falls back",
          ("student_int8.onnx",), ("support.json",), ("onnx", "onnxruntime", "onnxruntime-qnn"),
          lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name}, run_check),
    Stage("compile", "build the engine for the target's runtime and the deploy bundle (x86: tune the engine settings by measuring each)",
          ("student_int8.onnx", "student.onnx"), (ENGINE_JSON, ENGINE_DIR + "/", BUNDLE_DIR + "/"), ("onnxruntime", "onnxruntime-qnn"),
          lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "qnn": c.qnn_config.model_dump() if c.target.qnn else None,
                     "host": c.host_fingerprint(), "tune": c.profile.recipe.tune.model_dump(), "quantize": c.project.quantize.model_dump(),
                     "budgets": c.profile.budgets.model_dump(), **_data(c)}, run_compile),
    Stage("evaluate", "accuracy of the engine on the held-out test split",
          (ENGINE_JSON, "student_int8.onnx"), (), ("onnxruntime", "onnxruntime-qnn"),
          lambda c: {"target": c.target.model_dump(), **_data(c)}, run_evaluate),
    Stage("bench", "SingleStream latency at batch 1, Offline throughput, per-op profile (measured here, or estimated for an absent device); teacher and fp32 student for comparison",
          (ENGINE_JSON, "student_int8.onnx", "support.json", "student.onnx", "teacher.json", "teacher.safetensors?"), ("bench.json",),
          ("onnxruntime", "torch"),
          lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "bench": c.profile.recipe.bench.model_dump(),
                     "host": c.host_fingerprint()}, run_bench),
)
