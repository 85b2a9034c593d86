"""Weight-only quantization of MatMul weights with onnxruntime.quantization's MatMulNBits quantizer
(`matmul_nbits_quantizer.MatMulNBitsQuantizer`, RTN): constant MatMul weights [K, N] become blocks
of `block_size` values along K with one float scale (and, asymmetric, one zero point) per block, run
by ONNX Runtime's `com.microsoft.MatMulNBits` kernel (activations stay float; on x86 MLAS dequantizes
or, with `accuracy_level` 4, quantizes activations to int8 per block on the fly). `bits` 4 or 8.

For decoders this is where the size and the decode step's time go (every token reads every weight).
A MatMul whose K is not a multiple of `block_size` is padded by the quantizer; a MatMul whose weight is
not a constant (attention's Q·Kᵀ) stays float.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import require

BITS = (4, 8)


@dataclass(frozen=True)
class WeightOnly:
    """One MatMulNBits setting: bits, block size along K, symmetric (no zero points), accuracy level
    (None: ORT's default; 4: int8 activations per block in the kernel, x86/ARM)."""

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = None

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"MatMulNBits weight-only quantization takes bits {BITS}, not {self.bits}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"MatMulNBits block_size must be a power of two >= 16, not {self.block_size}")

    @property
    def name(self) -> str:
        return f"int{self.bits}-weight-only"

    def describe(self) -> str:
        level = "" if self.accuracy_level is None else f", accuracy_level {self.accuracy_level}"
        return (f"onnxruntime.quantization MatMulNBitsQuantizer (RTN): {self.bits}-bit "
                f"{'symmetric' if self.symmetric else 'asymmetric'} weights in blocks of {self.block_size} along K, "
                f"one float scale per block{level}; activations float (com.microsoft.MatMulNBits)")


def quantize_weight_only(fp32_model: Path, out_model: Path, setting: WeightOnly) -> int:
    """Write `fp32_model` with its constant MatMul weights quantized per `setting` to `out_model`;
    returns how many MatMulNBits nodes it has (0: nothing was quantized)."""
    onnx = require("onnx", "weight-only quantization")
    require("onnxruntime", "weight-only quantization")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = matmul_weights(onnx.load(str(fp32_model)))
    quantizer = MatMulNBitsQuantizer(model, bits=setting.bits, block_size=setting.block_size, is_symmetric=setting.symmetric,
                                     accuracy_level=setting.accuracy_level)
    logging.disable(logging.INFO)  # the quantizer logs every MatMul it visits
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    out_model.parent.mkdir(parents=True, exist_ok=True)
    quantized = quantizer.model.model
    onnx.save(quantized, str(out_model))
    return sum(1 for n in quantized.graph.node if n.op_type == "MatMulNBits")


def matmul_weights(model: Any) -> Any:
    """`model` with every constant weight a MatMul reads as an initializer the quantizer can see (exact
    rewrites): a Constant node feeding MatMul's second input becomes an initializer, and a Gemm with a
    constant B (alpha 1, beta 1, no transA; GPT-2's Conv1D projections) becomes MatMul (+ Add of C)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    weights = {n.input[1] for n in graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1}
    for name in weights & set(constants):
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(constants[name].attribute[0].t), name))
        graph.node.remove(constants[name])
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or node.input[1] not in inits or not plain:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            weight = f"{node.input[1]}_t"
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[1]]).T.copy(), weight))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
    del graph.node[:]
    graph.node.extend(nodes)
    return model
