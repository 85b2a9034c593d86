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


# runtimes whose engines take a decoder with a KV cache (past key/values in, present out; dynamic
# shapes); the QNN HTP (static shapes, no empty tensors) gets the prefill graph: P tokens in, logits
# and present key/values out
KV_CACHE_RUNTIMES = ("onnxruntime-cpu", "tensorrt")
PREFILL_RUNTIMES = ("qnn-htp",)


def kv_cache_export(ctx: Context, model: Any) -> bool:
    """Whether `model` exports with a KV cache: a Hugging Face decoder for a runtime that runs one."""
    from edgekd.tasks.base import is_hf_model

    runtimes = KV_CACHE_RUNTIMES + PREFILL_RUNTIMES
    return is_hf_model(model) and ctx.task.optimum_task == "text-generation" and ctx.target.runtime in runtimes


def kv_cache_mode(ctx: Context) -> str:
    """What a Hugging Face decoder exports as for this target's runtime (part of the stage's cache key):
    "past" (KV cache in and out), "prefill" (+ the decode graph's source) or "none"."""
    runtime = ctx.target.runtime
    return "past" if runtime in KV_CACHE_RUNTIMES else "prefill" if runtime in PREFILL_RUNTIMES else "none"


def exporter_of(model: Any, task: Any, with_past: bool = False) -> str:
    """Which exporter the task's export used for `model`, for the notes."""
    from edgekd.tasks.base import is_hf_model
    from edgekd.tasks.export import optimum_task_of

    if is_hf_model(model):
        past = (": one graph, past_key_values.N.key/value in, present.N.key/value out; at past length 0 the full-sequence "
                "forward, which parity and evaluation run (empty past); for the QNN HTP the prefill graph: no past inputs, "
                "logits and present.N.key/value out") if with_past else ""
        return (f"optimum-onnx ({type(model).__name__}, optimum task '{optimum_task_of(task, with_past)}'{past}, its dummy "
                "inputs, its ONNX Runtime vs torch validation passed)")
    return f"torch.onnx (dynamo) ({type(model).__name__})"


DECODE_ONNX = "student_decode.onnx"  # the QNN HTP's decode graph source (edgekd.backends.qnn.decoder)


def export_student(ctx: Context, model: Any, path: Path, decode: Path | None = None) -> bool:
    """The task's export of `model` to `path` (with a KV cache where `kv_cache_export`); whether it has
    one. For the QNN HTP `path` is the prefill graph and, given `decode`, the with-past graph (with
    position_ids) the decode graph is made from goes there."""
    from edgekd.tasks.export import export_hf

    with_past = kv_cache_export(ctx, model)
    if not with_past:
        ctx.task.export(model, path, ctx.target.opset)
        return False
    prefill = ctx.target.runtime in PREFILL_RUNTIMES
    training = model.training
    try:
        export_hf(model, ctx.task, path, ctx.target.opset, with_past=True, past_inputs=not prefill)
        if prefill and decode is not None:
            export_hf(model, ctx.task, decode, ctx.target.opset, with_past=True, positions=True)
    finally:
        model.train(training)
    return True


def run_export(ctx: Context, inputs: Files, out: Path) -> Outcome:
    from edgekd.graph.export import parity

    student = load_weights(build_student(ctx, inputs[STUDENT_JSON])[0], inputs[STUDENT_WEIGHTS], "student")
    path = out / STUDENT_ONNX
    with_past = export_student(ctx, student, path, out / DECODE_ONNX)
    provenance.stamp_onnx(path, build_provenance.props(ctx, "export"))
    feeds = ctx.eval_feeds.arrays
    onnx_logits = ortb.predict(ortb.open_session(path), feeds)
    check = parity(ctx.task.predict(student, feeds), onnx_logits)
    where = ortb.runtime_description()
    return Outcome({
        "export.parity_max_abs_diff": Metric(check.max_abs_diff, "", "measured", f"max |logit difference| over {check.samples} test samples, {where} vs torch"),
        metric_key(ctx, "onnx_fp32"): quality_metric(ctx, onnx_logits, where),
        "onnx_fp32.size_mb": size_metric(path, "student.onnx"),
    }, [f"exported by task {ctx.task.name} with {exporter_of(student, ctx.task, with_past)}, opset {ctx.target.opset}, "
       f"inputs {ctx.model_inputs.describe()} with dynamic batch", f"parity: {check.describe()}", *save_tokenizer(ctx, out, TOKENIZER_DIR)])


EXPORT = Stage("export", "the task's export (torch.onnx; optimum-onnx for Hugging Face models) + ONNX Runtime vs torch parity check",
               (STUDENT_JSON, STUDENT_WEIGHTS), (STUDENT_ONNX, folder(TOKENIZER_DIR)), ("torch", "onnx", "onnxscript", "onnxruntime"),
               lambda c: {"opset": c.target.opset, "task": c.project.task.model_dump(), "kv_cache": kv_cache_mode(c), **data_key(c)},
               run_export)
