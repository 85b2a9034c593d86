"""The static decode graph of a KV-cache decoder for the QNN HTP, beside the prefill graph the build's
engine is: one token in, a past of fixed length C - 1 (the prefill's key/values in its first slots, the
rest zeros masked off), the mask over C, explicit position_ids; logits and present key/values (C) out.

Made from the export stage's with-past graph (`decode/student.onnx`): quantized for HTP like the
prefill (the target's [qnn] recipe), calibrated on decode steps of the calibration rows
(edgekd.graph.decoder.static_decode_calibration), compiled to its own context binary
(`engine/decode_ctx.onnx` + `.bin`, copied to `bundle/decode/`), its partition counted from the context
model, and one decode step per calibration row run on HTP numerics against the fp32 graph.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.common.fsutil import atomic_copy
from edgekd.pipeline.results import Metric

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context

DECODE_CONTEXT = "decode_ctx.onnx"
DECODE_DIR = "decode"


def decode_context_length(ctx: Context) -> int:
    """C: the prefill's tokens (the task's sequence length) + recipe.bench.decode_tokens."""
    tokens = next(i for i in ctx.model_inputs.inputs if i.role == "token_ids")
    return int(tokens.shape[1]) + ctx.profile.recipe.bench.decode_tokens


def _static_inputs(ctx: Context, model: Path, context: int):  # noqa: ANN202 - ModelInputs
    from edgekd.graph.decoder import decoder_shapes, with_past
    from edgekd.graph.resolve import load_inputs

    inputs = with_past(ctx.model_inputs, model)
    shapes = dict(decoder_shapes(inputs, 1, context).decode)
    shapes["position_ids"] = (1, 1)
    return load_inputs(model, shapes, static=True)


def build_decode_context(ctx: Context, decode_fp32: Path, out: Path, engine_dir: Path, bundle_dir: Path) -> tuple[dict[str, Metric], list[str]]:
    """Quantize, compile and check the decode graph; (metrics, notes)."""
    import onnx

    from edgekd.backends.qnn.htp import context_files, open_session
    from edgekd.backends.qnn.quantize import quantize_for_htp
    from edgekd.graph.decoder import static_decode_calibration
    from edgekd.graph.quantize import calibration_rows

    context = decode_context_length(ctx)
    inputs = _static_inputs(ctx, decode_fp32, context)
    calib = static_decode_calibration(decode_fp32, calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config), context)
    with tempfile.TemporaryDirectory(dir=out, prefix=".decode-") as tmp:
        qdq = Path(tmp) / "decode_htp.onnx"
        quantize_for_htp(decode_fp32, qdq, calib, ctx.qnn_config, ctx.quantize_config.calibrate_method, inputs)
        session = open_session(qdq, ctx.qnn_config, context_out=engine_dir / DECODE_CONTEXT)
    files = context_files(engine_dir / DECODE_CONTEXT)
    for path in files:
        atomic_copy(path, bundle_dir / DECODE_DIR / path.name)
    nodes = onnx.load(str(engine_dir / DECODE_CONTEXT), load_external_data=False).graph.node
    on_cpu = [n.op_type for n in nodes if n.op_type != "EPContext"]
    agree = _decode_agreement(session, decode_fp32, calib)
    where = f"{len(calib['position_ids'])} decode steps of the calibration rows, HTP backend (emulated here) vs fp32 ONNX Runtime CPU"
    metrics = {"engine.decode_step_agreement_pct": Metric(agree, "%", "measured", f"top-1 agreement of the decode graph's logits, {where}")}
    shapes = ", ".join(f"{i.name} {'x'.join(map(str, i.shape))}" for i in inputs.inputs if not i.name.endswith(".value"))
    notes = [f"decode graph for the HTP: static, 1 token after a {context - 1}-slot past, mask over {context} ({shapes}); "
             f"context binary {', '.join(p.name for p in files)} (also in bundle/{DECODE_DIR}/; the device runner drives the prefill only)",
             f"decode graph partition: {sum(n.op_type == 'EPContext' for n in nodes)} EPContext node(s) on the HTP, "
             f"{len(on_cpu)} node(s) left on the CPU ({', '.join(sorted(set(on_cpu))) or 'none'})"]
    return metrics, notes


def _decode_agreement(session, fp32: Path, calib: dict[str, np.ndarray]) -> float:  # noqa: ANN001 - an ORT session
    """Top-1 agreement (%) of the HTP decode step with the fp32 graph's, one calibration row at a time."""
    import onnxruntime as ort

    reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    hits = []
    for row in range(len(calib["position_ids"])):
        feed = {n: calib[n][row:row + 1] for n in names}
        hits.append(int(np.argmax(session.run(None, feed)[0][0, -1]) == np.argmax(reference.run(None, feed)[0][0, -1])))
    return 100.0 * float(np.mean(hits))
