"""Check a quantized (QDQ) graph against its target's recipe: zero-point types and symmetry."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgekd.config.target import TargetQuantize

if TYPE_CHECKING:
    from pathlib import Path

    import onnx

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LayerNormalization")  # input 1: weights (scale), input 2: bias
_NAMES = {np.dtype("int8"): "int8", np.dtype("uint8"): "uint8", np.dtype("int16"): "int16", np.dtype("uint16"): "uint16",
          np.dtype("int32"): "int32"}


def qdq_violations(model: onnx.ModelProto, recipe: TargetQuantize, wide_activations: tuple[str, ...] = ()) -> list[str]:
    """Every Q/DQ node whose zero-point type or value breaks `recipe`, one line each (empty: ok).
    `wide_activations`: activation types allowed besides the recipe's (the HTP's uint16 tensors of a
    mixed-precision uint8 graph).

    A DequantizeLinear of an initializer that feeds a weight slot (Conv/ConvTranspose/Gemm/MatMul/LayerNorm's
    second input, or a bias) quantizes a weight (int32 ones are biases, zero point 0); every other
    Q/DQ node, including constants that ops read as data (an embedding table under Gather, GELU's
    constants), is quantized as an activation (ONNX Runtime does so). A missing zero point means
    uint8 0 (the ONNX default)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    weight_slots = {name for n in model.graph.node if n.op_type in _WEIGHT_OPS for name in n.input[1:3]}
    problems = []
    for node in (n for n in model.graph.node if n.op_type in _QDQ):
        is_weight = node.op_type == "DequantizeLinear" and node.input[0] in inits and node.output[0] in weight_slots
        kind = "weight" if is_weight else "activation"
        expected = recipe.weight_type if is_weight else recipe.activation_type
        symmetric = recipe.symmetric_weights if is_weight else recipe.symmetric_activations
        if len(node.input) > 2 and node.input[2] in inits:
            zero_point = numpy_helper.to_array(inits[node.input[2]])
        elif len(node.input) > 2 and node.input[2]:
            problems.append(f"{node.op_type} '{node.name}': {kind} zero point '{node.input[2]}' is not a constant")
            continue
        else:
            zero_point = np.zeros(1, dtype=np.uint8)
        dtype = _NAMES.get(zero_point.dtype, str(zero_point.dtype))
        if is_weight and dtype == "int32":  # a bias: int32 with scale = input scale x weight scale
            if not recipe.quantize_bias:
                problems.append(f"{node.op_type} '{node.name}': int32 bias Q/DQ, the target takes float biases")
                continue
            expected, symmetric = "int32", True
        if dtype != expected and (is_weight or dtype not in wide_activations):
            problems.append(f"{node.op_type} '{node.name}': {kind} type {dtype}, the target needs {expected}")
        if symmetric and np.any(zero_point != 0):
            problems.append(f"{node.op_type} '{node.name}': {kind} zero point {zero_point.ravel()[:4].tolist()} is not 0 (the target needs symmetric quantization)")
    return problems


def has_qdq(model: "onnx.ModelProto | Path") -> bool:
    """True when the model already holds QuantizeLinear/DequantizeLinear (or QOperator) nodes."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    quantized = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear"}
    return any(n.op_type in quantized for n in model.graph.node)
