"""export: torch.onnx export of the distilled student, then ONNX Runtime vs torch parity on the test split."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.backends.ort import session as ortb
from edgekd.distill import provenance as build_provenance
from edgekd.distill.weights import load_weights
from edgekd.graph import provenance
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Files, Outcome, Stage, size_metric
from edgekd.stages.common import accuracy_metric, build_student, data_key

if TYPE_CHECKING:
    from edgekd.stages.context import Context


def run_export(ctx: Context, inputs: Files, out: Path) -> Outcome:
    from edgekd.distill.trainer import predict
    from edgekd.graph.export import export_onnx, parity

    student = load_weights(build_student(ctx, inputs["student.json"])[0], inputs["student.safetensors"], "student")
    path = out / "student.onnx"
    export_onnx(student, ctx.data.input_shape, path, ctx.target.opset)
    provenance.stamp_onnx(path, build_provenance.props(ctx, "export"))
    test_x = ctx.data.test.x
    onnx_logits = ortb.predict(ortb.open_session(path), ctx.eval_feeds.arrays)
    check = parity(predict(student, test_x), onnx_logits)
    where = ortb.runtime_description()
    return Outcome({
        "export.parity_max_abs_diff": Metric(check.max_abs_diff, "", "measured", f"max |logit difference| over {check.samples} test samples, {where} vs torch"),
        "onnx_fp32.accuracy": accuracy_metric(ctx, onnx_logits, where),
        "onnx_fp32.size_mb": size_metric(path, "student.onnx"),
    }, [f"exported with torch.onnx (dynamo), opset {ctx.target.opset}, dynamic batch", f"parity: {check.describe()}"])



EXPORT = Stage("export", "torch.onnx export + ONNX Runtime vs torch parity check",
               ("student.json", "student.safetensors"), ("student.onnx",), ("torch", "onnx", "onnxscript", "onnxruntime"),
               lambda c: {"opset": c.target.opset, **data_key(c)}, run_export)
