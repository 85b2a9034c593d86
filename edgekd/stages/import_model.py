"""import: the first stage of `edgekd compile MODEL.onnx`: take the trained model in (check that it runs at
the resolved input shapes, measure it); the engine stages of a build follow (edgekd.stages)."""
from __future__ import annotations

from pathlib import Path

from edgekd.backends.ort import session as ortb
from edgekd.common.artefacts import STUDENT_ONNX
from edgekd.common.fsutil import atomic_copy
from edgekd.errors import ConfigError
from edgekd.pipeline.stage import Files, Outcome, Stage, size_metric
from edgekd.stages.common import metric_key, quality_metric
from edgekd.stages.compile_context import CompileContext


def _runs(ctx: CompileContext, path: Path) -> None:
    """One ONNX Runtime run on the first evaluation sample: a clear error when the model does not
    run at the resolved shapes (rather than a failure deep in quantization)."""
    try:
        ortb.open_session(path).run(None, ctx.eval_feeds.first())
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; all mean "does not run with these inputs"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{ctx.model_path} does not run in ONNX Runtime with inputs {ctx.model_inputs.describe()}: {first}",
                          "give the shapes it takes with --shape NAME=DIMS (or data that fits it)") from None


def run_import(ctx: CompileContext, inputs: Files, out: Path) -> Outcome:
    path = out / STUDENT_ONNX
    atomic_copy(ctx.model_path, path)
    _runs(ctx, path)
    where = ortb.runtime_description()
    sources = "; ".join(f"{i.name} {'x'.join(map(str, i.shape))} ({', '.join(sorted(set(i.sources)))})" for i in ctx.model_inputs.inputs)
    notes = [f"model {ctx.model_path} (sha256 {ctx.model_sha256[:12]}...)", f"inputs: {sources}", *ctx.model_inputs.notes,
             f"calibration data: {ctx.calib_feeds.description}", f"evaluation data: {ctx.eval_feeds.description}"]
    metrics = {metric_key(ctx, "onnx_fp32"): quality_metric(ctx, ortb.predict_file(path, ctx.eval_feeds.arrays), where),
               "onnx_fp32.size_mb": size_metric(path, "student.onnx (the given model)")}
    return Outcome(metrics, notes)


IMPORT = Stage("import", "take the trained model in: check it runs at the resolved input shapes, measure the fp32 model",
               (), (STUDENT_ONNX,), ("onnx", "onnxruntime"),
               lambda c: {"model": c.model_sha256, "data": c.data_fingerprint, "inputs": c.model_inputs.key()}, run_import)
