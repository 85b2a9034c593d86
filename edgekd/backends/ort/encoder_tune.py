"""Encoder attention fusion for the x86 tuner: the fp32 graph with its unmasked self-attention fused
into MultiHeadAttention (edgekd.graph.mha_fusion), a variant source beside the plain and the ONNX
Runtime-fused graphs, used only when its outputs match the given graph's on the first evaluation
rows. Whether it is faster is measured like every other candidate (edgekd.backends.ort.tune)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context

MHA = "mha"  # the quant_format suffix of variants made from the MultiHeadAttention-fused graph
CHECK_ROWS = 2


def mha_graph(ctx: Context, fp32: Path, out: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """Variant fields (precision fp32, quant_format "mha", model, how, build_s) of `fp32` with its
    attention fused, or None and a note saying why it was not used."""
    from edgekd.graph.graph_edit import NotFusable, verify
    from edgekd.graph.mha_fusion import fuse_mha

    path, start = out / f"student_fp32_{MHA}.onnx", time.perf_counter()
    try:
        fusion = fuse_mha(fp32, path)
        worst = verify(fp32, path, [ctx.eval_feeds.first(CHECK_ROWS)])
    except NotFusable as e:
        path.unlink(missing_ok=True)
        return None, [f"MultiHeadAttention fusion not used: {e}"]
    return {"precision": "fp32", "quant_format": MHA, "model": path, "build_s": time.perf_counter() - start,
            "how": f"{fusion.describe()}; outputs within {worst:.1e} (relative) of {fp32.name}'s on the first "
                   f"{CHECK_ROWS} evaluation rows"}, []
