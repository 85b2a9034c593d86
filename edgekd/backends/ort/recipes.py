"""The static Q/DQ recipe as an engine-tuning axis (x86, ONNX Runtime CPU).

Which activation type is fastest at equal accuracy differs by CPU class: on an Intel Sapphire Rapids
host (AMX, AVX-512 VNNI) U8S8 with reduce_range beat S8S8 on every model issue 16 measured, and S8S8
was slower than fp32 on DistilBERT; on AVX2 hosts MLAS's U8S8 kernels use VPMADDUBSW, whose 16-bit
sums saturate without reduce_range. So each x86 target lists, in [tune] qdq_recipes, the recipes to
try beside its [quantize] one (the quantize stage's graph), and the tuner measures them like every
other candidate: same calibration rows, same calibration method, same per-channel weights.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.config.target import QdqRecipe, TargetQuantize

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context

FORMAT_PREFIX = "qdq-"  # a recipe variant's quant_format: qdq-u8s8-rr, qdq-s8s8, ...


def recipe_name(recipe: QdqRecipe | TargetQuantize) -> str:
    """u8s8 / s8s8 (activation type, weight type), with -rr where reduce_range is on."""
    short = {"int8": "s8", "uint8": "u8", "uint16": "u16"}
    weights = getattr(recipe, "weight_type", "int8")
    return f"{short[recipe.activation_type]}{short[weights]}" + ("-rr" if recipe.reduce_range else "")


def recipe_variants(ctx: Context, source: Path, out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Keyword arguments of one tuning Variant per [tune] qdq_recipes entry that differs from the
    target's [quantize] recipe (quantized from `source` into `out`, timed: build_s), and notes on the
    entries not made."""
    from edgekd.common.toolchain import quiet
    from edgekd.graph.quantize import calibration_rows, quantize_int8

    base, made, notes = ctx.quant_recipe, [], []
    rows = None
    for recipe in ctx.target.tune.qdq_recipes:
        tq = base.model_copy(update={"activation_type": recipe.activation_type, "reduce_range": recipe.reduce_range})
        name = recipe_name(tq)
        if tq == base:
            notes.append(f"Q/DQ recipe {name} is the target's [quantize] recipe: the quantize stage's graph (int8-qdq)")
            continue
        rows = rows if rows is not None else calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config)
        masks = tuple(i.name for i in ctx.model_inputs.inputs if i.role == "attention_mask")
        path, start = out / f"student_int8_qdq_{name.replace('-', '_')}.onnx", time.perf_counter()
        with quiet():
            quantize_int8(source, path, rows, ctx.quantize_config, tq, quant_format="qdq", mask_inputs=masks)
        how = (f"quantize_static to Q/DQ of {source.name} with recipe {name} (activations {tq.activation_type}, weights "
               f"{tq.weight_type}, reduce_range {tq.reduce_range}), the quantize stage's calibration rows and method")
        made.append({"precision": "int8", "quant_format": FORMAT_PREFIX + name, "model": path, "how": how,
                     "build_s": time.perf_counter() - start})
    return made, notes
