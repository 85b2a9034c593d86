"""Which layers TensorRT can place on a DLA core (the ONNX parser must take the node first:
rules_tensorrt.py). Static rules; nothing here runs TensorRT to confirm them.

Sources:
- [hw] ../shared/HARDWARE.md "DLA" (TensorRT developer guide "DLA supported layers and
  restrictions"): static shapes only (min = opt = max), batch <= 4096, non-batch dims <= 8192; the
  native layers (Conv, ConvTranspose, Gemm, MatMul with a constant second input, pooling,
  BatchNorm, activations, elementwise, Concat, Slice, Softmax, Resize, Reshape/Transpose, LRN);
  Exp, Log, Sqrt, HardSwish, GlobalAveragePool and ReduceMean not on DLA; DLA runs INT8/FP16 only.
- [op] TensorRT 10.3 operator reference, "DLA Support" sections: ElementWise (POW only with exactly
  one constant input; DIV, EQUAL, GREATER, LESS with at most one; SUM, PROD, MAX, MIN, SUB with
  none: this lifts HARDWARE.md's "Div, Pow, Min not on DLA" for TensorRT 10.3), Activation (CLIP
  with alpha 0 and beta <= 127, RELU, SIGMOID, TANH, LEAKY_RELU: no GELU, no ERF), Concatenation
  ("across C dimensions only"), SoftMax (DLA FP16), ParametricReLU (slopes a build-time constant).
  The Normalization, MatrixMultiply-of-two-activations, Gather, Select (Where) and Cast layers have
  no DLA support.
- [api] NvInfer.h ISoftMaxLayer (TensorRT 10.x): on DLA the axis is one of C, H, W; the axis
  dimension is at most 8192 when the other non-batch dimensions are 1, else at most 1024.

DLA's batch is the product of all dimensions but the last three (C, H, W) [hw].
"""
from __future__ import annotations

import math
from typing import Any

from edgekd.analysis.onnx_index import FLOATS, QDQ, TP, GraphIndex, attr, type_name

DLA_NATIVE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "BatchNormalization", "Relu",
              "Sigmoid", "Tanh", "Clip", "LeakyRelu", "PRelu", "Add", "Sub", "Mul", "Max", "Min", "Div", "Pow",
              "Equal", "Greater", "Less", "Concat", "Slice", "Softmax", "Resize", "Reshape", "Transpose", "LRN",
              "Flatten", "Squeeze", "Unsqueeze"}  # Flatten/Squeeze/Unsqueeze parse to Reshape's shuffle layer
DLA_NOT = {"Exp", "Log", "Sqrt", "HardSwish", "GlobalAveragePool", "ReduceMean"}  # [hw]
NO_DLA_LAYER = {  # [op]/[hw]: the TensorRT layer these ops become has no DLA implementation
    **dict.fromkeys(("LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization"),
                    "TensorRT's normalization layer has no DLA implementation"),
    **dict.fromkeys(("Gelu", "Erf"), "DLA's activations are ReLU, Sigmoid, TanH, LeakyReLU and Clip only"),
    **dict.fromkeys(("Gather", "GatherElements", "GatherND"), "TensorRT's gather layer (embedding lookup) has no DLA "
                                                              "implementation"),
    "Where": "TensorRT's select layer has no DLA implementation",
    "Cast": "TensorRT's cast layer has no DLA implementation (DLA computes INT8/FP16 only)",
}
DLA_ABSORBED = QDQ | {"Constant"}  # Q/DQ fold into their neighbours' INT8 layers; constants become weights
MAX_BATCH, MAX_DIM, MAX_SOFTMAX_AXIS, MAX_SOFTMAX_AXIS_SPREAD = 4096, 8192, 8192, 1024
FOLDED = "computed from build-time constants only (weights, static shapes): TensorRT folds it into a constant"
_COMPARE = {"Equal", "Greater", "Less"}


def dynamic_reason(g: GraphIndex, input_shapes: dict[str, tuple[int, ...]] | None) -> str:
    """Why DLA cannot run anything: an input with dynamic dims the build does not pin [hw]."""
    pinned = set(input_shapes or {})
    for inp in g.inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name not in pinned and any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims):
            shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
            return (f"input '{inp.name}' has dynamic dims ({shown}); DLA needs static shapes "
                    "(min = opt = max): build with one shape")
    return ""


def _low_precision(node: Any, g: GraphIndex) -> bool:
    """True when a node sits inside Q/DQ (an input from DequantizeLinear or an output into
    QuantizeLinear) or reads FP16: a strongly typed network then runs it in INT8/FP16."""
    from_dq = any(g.producers.get(i) is not None and g.producers[i].op_type == "DequantizeLinear" for i in node.input)
    to_q = any(c.op_type == "QuantizeLinear" for o in node.output for c in g.consumers.get(o, []))
    return from_dq or to_q or any(g.types.get(i) == TP.FLOAT16 for i in node.input)


def _axis(node: Any, rank: int, default: int) -> int:
    axis = attr(node, "axis", default)
    return axis + rank if axis < 0 else axis


def _softmax_problem(node: Any, g: GraphIndex) -> str:
    shape = g.shapes.get(node.input[0])
    if shape is None:
        return "Softmax's input shape is unknown, so DLA's Softmax limits cannot be checked"
    rank = len(shape)
    axis = _axis(node, rank, -1)
    if axis < max(rank - 3, 0) or (rank > 3 and axis == 0):
        return f"DLA's Softmax runs along C, H or W only; this one runs along axis {axis} of a rank-{rank} tensor"
    others = [d for i, d in enumerate(shape[max(rank - 3, 0):], start=max(rank - 3, 0)) if i != axis]
    limit = MAX_SOFTMAX_AXIS if all(d == 1 for d in others) else MAX_SOFTMAX_AXIS_SPREAD
    if shape[axis] > limit:
        return f"DLA's Softmax takes an axis of at most {limit} here; it is {shape[axis]}"
    return ""


def _concat_problem(node: Any, g: GraphIndex) -> str:
    shape = g.shapes.get(node.output[0])
    if shape is None:
        return "Concat's output shape is unknown, so DLA's channel-only rule cannot be checked"
    rank, axis = len(shape), _axis(node, len(shape), 0)
    if rank < 3 or axis != rank - 3:
        return (f"DLA concatenates across C (axis {rank - 3} of a rank-{rank} tensor) only; this Concat joins axis "
                f"{axis} (a KV-cache Concat joins the sequence axis)")
    return ""


def _clip_problem(node: Any, g: GraphIndex) -> str:
    bounds = []
    for slot, name, default in ((1, "min", None), (2, "max", None)):
        value = g.value(node.input[slot]) if len(node.input) > slot and node.input[slot] else None
        bounds.append(float(value.reshape(-1)[0]) if value is not None else attr(node, name, default))
    low, high = bounds
    if low != 0 or high is None or high > 127:
        return f"DLA's Clip needs min 0 and max <= 127 (a ReLU6-style clip); this one is [{low}, {high}]"
    return ""


def _layer_problem(node: Any, g: GraphIndex) -> str:
    """[hw]/[op]: whether DLA has the layer at all, and the per-layer conditions."""
    op = node.op_type
    if op in NO_DLA_LAYER:
        return f"{op}: {NO_DLA_LAYER[op]}"
    if op in DLA_NOT:
        return f"{op} does not run on DLA"
    if op not in DLA_NATIVE:
        return f"{op} is not among DLA's native layers"
    constants = [bool(i) and g.is_build_constant(i) for i in node.input]
    if op == "MatMul" and not (len(constants) > 1 and constants[1]):
        return "MatMul runs on DLA only with a constant second input (weights); here both inputs are activations " \
               "(as in attention's Q·Kᵀ and scores·V)"
    if op == "Pow" and sum(constants[:2]) != 1:
        return "DLA's Pow needs exactly one constant input"
    if op == "PRelu" and not (len(constants) > 1 and constants[1]):
        return "DLA's PRelu needs its slopes as a build-time constant"
    checks = {"Softmax": _softmax_problem, "Concat": _concat_problem, "Clip": _clip_problem}
    return checks[op](node, g) if op in checks else ""


def _type_problem(node: Any, g: GraphIndex) -> str:
    """[hw] DLA runs INT8/FP16 layers: no INT32/INT64/BOOL tensors (a comparison may write BOOL)."""
    tensors = [i for i in node.input if i and not g.is_build_constant(i)]
    tensors += [o for o in node.output if o and node.op_type not in _COMPARE]
    for name in tensors:
        elem = g.types.get(name)
        if elem is not None and elem not in FLOATS | {TP.INT8, TP.UINT8}:
            return f"DLA computes in INT8/FP16 only; '{name}' is {type_name(elem)}"
    return ""


def _shape_problem(node: Any, g: GraphIndex) -> str:
    """[hw] batch <= 4096, each of C, H, W in 1..8192."""
    for name in (*[i for i in node.input if i and not g.is_build_constant(i)], *node.output):
        shape = g.shapes.get(name)
        if not shape:
            continue
        batch, chw = shape[:-3], shape[-3:]
        if any(d == 0 for d in shape):
            return f"'{name}' is empty ({'x'.join(map(str, shape))}); DLA runs no empty tensors"
        if any(d > MAX_DIM for d in chw) or math.prod(batch) > MAX_BATCH:
            return (f"'{name}' is {'x'.join(map(str, shape))}; DLA takes a batch of at most {MAX_BATCH} and C, H, W of "
                    f"at most {MAX_DIM}")
    return ""


def dla_verdict(node: Any, g: GraphIndex, dynamic: str, trt_major: int) -> tuple[str, str]:
    """(why DLA cannot run `node`, "" when it can; a note when it runs nowhere at run time)."""
    if node.op_type in DLA_ABSORBED:
        return "", ""
    if g.folds(node):
        return "", FOLDED
    problem = _layer_problem(node, g) or _type_problem(node, g) or _shape_problem(node, g)
    if problem:
        return problem, ""
    if trt_major >= 11 and not _low_precision(node, g):
        return ("TensorRT 11 networks are strongly typed and this node computes in FP32 (no Q/DQ or FP16 around it); "
                "DLA runs only INT8/FP16 layers"), ""
    return dynamic, ""
