"""export: torch.onnx export of the distilled student, then ONNX Runtime vs torch parity on the test split."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.backends.ort import session as ortb
from edgekd.common.artefacts import STUDENT_JSON, STUDENT_ONNX, STUDENT_WEIGHTS, TOKENIZER_DIR, folder
from edgekd.distill import provenance as build_provenance
from edgekd.distill.weights import load_weights
from edgekd.graph import provenance
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Files, Outcome, Stage, size_metric
from edgekd.stages.common import build_student, data_key, metric_key, quality_metric, save_tokenizer

if TYPE_CHECKING:
    from edgekd.stages.context import Context


def exporter_of(model: Any, task: Any) -> str:
    """Which exporter the task's export used for `model`, for the notes."""
    from edgekd.tasks.base import is_hf_model

    if is_hf_model(model):
        return (f"optimum-onnx ({type(model).__name__}, optimum task '{task.optimum_task}', its dummy inputs, "
                "its ONNX Runtime vs torch validation passed)")
    return f"torch.onnx (dynamo) ({type(model).__name__})"


def run_export(ctx: Context, inputs: Files, out: Path) -> Outcome:
    from edgekd.graph.export import parity

    student = load_weights(build_student(ctx, inputs[STUDENT_JSON])[0], inputs[STUDENT_WEIGHTS], "student")
    path = out / STUDENT_ONNX
    ctx.task.export(student, path, ctx.target.opset)
    provenance.stamp_onnx(path, build_provenance.props(ctx, "export"))
    feeds = ctx.eval_feeds.arrays
    onnx_logits = ortb.predict(ortb.open_session(path), feeds)
    check = parity(ctx.task.predict(student, feeds), onnx_logits)
    where = ortb.runtime_description()
    return Outcome({
        "export.parity_max_abs_diff": Metric(check.max_abs_diff, "", "measured", f"max |logit difference| over {check.samples} test samples, {where} vs torch"),
        metric_key(ctx, "onnx_fp32"): quality_metric(ctx, onnx_logits, where),
        "onnx_fp32.size_mb": size_metric(path, "student.onnx"),
    }, [f"exported by task {ctx.task.name} with {exporter_of(student, ctx.task)}, opset {ctx.target.opset}, "
       f"inputs {ctx.model_inputs.describe()} with dynamic batch", f"parity: {check.describe()}", *save_tokenizer(ctx, out, TOKENIZER_DIR)])




EXPORT = Stage("export", "the task's export (torch.onnx; optimum-onnx for Hugging Face models) + ONNX Runtime vs torch parity check",
               (STUDENT_JSON, STUDENT_WEIGHTS), (STUDENT_ONNX, folder(TOKENIZER_DIR)), ("torch", "onnx", "onnxscript", "onnxruntime"),
               lambda c: {"opset": c.target.opset, "task": c.project.task.model_dump(), **data_key(c)}, run_export)
