"""The x86 (ONNX Runtime CPU) recipe for transformer graphs, before quantization: ONNX Runtime's
transformer fusions (edgekd.graph.transformer), kept only when the fused fp32 graph computes what
the given one does.

The parity check runs both fp32 graphs in ONNX Runtime on the first PARITY_ROWS evaluation samples,
and again with their attention masks left-padded and gapped (edgekd.graph.transformer.mask_variants:
generated feeds have masks of ones only, and a mask handled as a count of ones would pass them). It
holds when every output differs by at most PARITY_TOLERANCE x max(1, the largest |output|) of the
given graph; otherwise the given graph is quantized, and the notes say why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.backends.ort import session as ortb
from edgekd.common.artefacts import STUDENT_FUSED
from edgekd.common.toolchain import require
from edgekd.pipeline.results import Metric

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context

FUSED_MODEL = STUDENT_FUSED  # the quantize stage's fused fp32 graph, an engine candidate of the x86 tuner
PARITY_ROWS = 64
PARITY_TOLERANCE = 1e-3


@dataclass
class Fusion:
    """What quantization starts from: `model` (the fused graph, or the given one), `fused` (the fused
    fp32 graph when it is used, else None), what happened and what was measured."""

    model: Path
    fused: Path | None = None
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)


def _parity(ctx: Context, given: Path, fused: Path) -> tuple[float, float, float, str]:
    """(largest |fused - given| over every feed, the tolerance, top-1 agreement in %, how)."""
    from edgekd.graph.transformer import mask_variants
    from edgekd.pipeline.evaluation import agreement_pt

    feeds = ctx.eval_feeds
    first = feeds.first(min(len(feeds), PARITY_ROWS))
    sets = {"as given": first, **mask_variants(first, ctx.model_inputs)}
    worst, scale, agree = 0.0, 0.0, []
    for arrays in sets.values():
        reference, got = ortb.predict_file(given, arrays), ortb.predict_file(fused, arrays)
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - reference))))
        scale = max(scale, float(np.max(np.abs(reference))))
        agree.append(agreement_pt(got, reference))
    rows = len(next(iter(first.values())))
    how = (f"fused vs given fp32 graph, {ortb.runtime_description()}, on {rows} of {feeds.description}"
           + (f" (attention masks {', '.join(sets)})" if len(sets) > 1 else ""))
    return worst, PARITY_TOLERANCE * max(1.0, scale), float(np.mean(agree)), how


def fuse_for_cpu(ctx: Context, fp32: Path, out: Path) -> Fusion:
    """The fused graph of a transformer `fp32` (written to out/FUSED_MODEL) when the target's
    [quantize] transformer_fusion asks for it and it passes the parity check; else `fp32` itself."""
    onnx = require("onnx", "transformer fusion")
    from edgekd.graph.transformer import (
        attention_heads,
        fuse_transformer,
        is_decoder_step,
        is_transformer,
    )

    model = onnx.load(str(fp32), load_external_data=False)
    if not ctx.quant_recipe.transformer_fusion or not is_transformer(model):
        return Fusion(fp32)
    if is_decoder_step(model):
        skipped = "transformer fusions not applied: a decoder step with past key/values (only encoder graphs are fused and checked here)"
        return Fusion(fp32, notes=[skipped])
    path = out / FUSED_MODEL
    applied = fuse_transformer(fp32, path)
    if not applied:
        return Fusion(fp32, notes=["transformer graph: onnxruntime.transformers' optimizer found nothing to fuse"])
    worst, tolerance, agree, how = _parity(ctx, fp32, path)
    fused_ops = ", ".join(f"{op} x{count}" for op, count in applied.items())
    metrics = {"fusion.max_abs_diff": Metric(worst, "", "measured", how),
               "fusion.agreement_pct": Metric(agree, "%", "measured", f"top-1 agreement, {how}")}
    if worst > tolerance:
        path.unlink()
        refused = (f"transformer fusions ({fused_ops}) NOT used: the fused graph differs from the given one by up to "
                   f"{worst:.3g} > tolerance {tolerance:.3g} ({how}); the given graph is quantized")
        return Fusion(fp32, notes=[refused], metrics=metrics)
    heads = sorted(set(attention_heads(onnx.load(str(path), load_external_data=False))))
    fused = (f"transformer graph fused by onnxruntime.transformers (model_type 'bert', num_heads/hidden_size read from the "
             f"graph{f': {heads} heads' if heads else ''}, raw 2-D attention masks): {fused_ops}")
    parity = (f"fusion parity: max |fused - given| {worst:.3g} <= tolerance {tolerance:.3g}, top-1 agreement {agree:.2f}% "
              f"({how}); the fused graph is quantized and is the tuner's fp32 candidate ({FUSED_MODEL})")
    notes = [fused, parity]
    return Fusion(path, path, notes, metrics)
