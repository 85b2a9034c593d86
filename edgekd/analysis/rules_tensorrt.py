"""Where each node of an ONNX model runs under TensorRT: its ONNX parser's rules here, DLA's in
rules_dla.py. Static rules (nothing here runs TensorRT to confirm them); only the top-level graph is
checked (If/Loop/Scan bodies are not descended into).

Sources, per rule below:
- [ops] onnx/onnx-tensorrt docs/operators.md at the 10.0/10.1 GA releases ("TensorRT 10.0 supports
  operators in the inclusive range of opset 9 to opset 20"; the "N" rows; the Supported Types and
  Restrictions columns), and onnxOpImporters.cpp of 10.1 GA for what the table leaves implicit
  (MatMul refuses INT32/INT64, Gather/Expand/Where/Einsum/Trilu refuse UINT8, Range's types, Cast's
  target types in importerUtils.cpp convertDtype);
- [log] onnx-tensorrt docs/Changelog.md for what later 10.x releases lifted: tensor `axes` for Slice
  (10.3) and Pad (10.4), dynamic Squeeze/Unsqueeze axes (10.7), CumSum (10.8), Einsum diagonal and
  broadcasting (10.12), STFT (10.5), window ops (10.4), Attention (10.14), RMSNormalization and
  RotaryEmbedding (10.15); TensorRT 11.x (NVIDIA TensorRT ONNX opset guide: opset <= 25 from 11.5,
  whose release notes add opset 25; so 9-24 before), Swish (11.0), DFT (11.2);
- [hw] ../shared/HARDWARE.md "TensorRT ONNX rules" (Q/DQ: symmetric, INT8/FP8/INT4 only, UINT8 only
  at network I/O; TopK; Resize; pooling).

runs_on: "accelerator" (the GPU, or the DLA core for DLA targets), "fallback" (a DLA target's
layer that GPU fallback moves to the GPU), "unsupported" (the parser rejects it, or a DLA target
without GPU fallback cannot place it: the build fails).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto as TP  # onnx is a core dependency; element types by name

from edgekd.analysis.onnx_index import FLOATS, QDQ, GraphIndex, attr, type_name  # noqa: F401  (re-exported)
from edgekd.analysis.support_types import NodeSupport

OPSETS = {10: (9, 20), 11: (9, 24)}  # [ops] 10.0/10.1; [log] 11.x (25 only from 11.5)
TOPK_MAX_K = 3840
UNSUPPORTED = {  # [ops] 10.1 GA "N" rows
    "AffineGrid", "Bernoulli", "BitShift", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
    "Det", "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix",
    "Multinomial", "NegativeLogLikelihoodLoss", "QLinearConv", "QLinearMatMul", "RegexFullMatch",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "TfIdfVectorizer", "Unique"}
UNSUPPORTED_PREFIXES = ("Sequence", "Optional", "String", "Bitwise")
ADDED_IN = {"STFT": (10, 5), "BlackmanWindow": (10, 4), "HammingWindow": (10, 4), "HannWindow": (10, 4),  # [log]
            "Attention": (10, 14), "RMSNormalization": (10, 15), "RotaryEmbedding": (10, 15), "TensorScatter": (10, 15),
            "Swish": (11, 0), "DFT": (11, 2)}
# input index of `axes`, and the release that took it as a tensor ([log]; None: an initializer always)
AXES_INPUT = {"Pad": (3, (10, 4)), "Slice": (3, (10, 3)), "Squeeze": (1, (10, 7)), "Unsqueeze": (1, (10, 7)),
              "CumSum": (1, (10, 8))}
POOLING = {"MaxPool", "AveragePool", "LpPool"}

INTS = {TP.INT32, TP.INT64}
# [ops] element types TensorRT has at all (INT8/FP8/INT4 only through Q/DQ; UINT8 only at network I/O)
TRT_TYPES = FLOATS | INTS | {TP.BOOL, TP.INT8, TP.UINT8, TP.FLOAT8E4M3FN, TP.INT4}
CAST_TO = FLOATS | INTS | {TP.UINT8, TP.BOOL}  # [ops] Cast's Supported Types
# [ops] "Supported Types" of the ops these graphs use, for their data input (input 0)
FLOAT_ONLY = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Softmax", "LogSoftmax", "LayerNormalization",
              "GroupNormalization", "InstanceNormalization", "BatchNormalization", "Erf", "Exp", "Log", "Sqrt", "Pow",
              "Tanh", "Sigmoid", "Reciprocal", "CumSum", "Einsum", "NonZero", "Resize", "HardSigmoid", "HardSwish",
              "Elu", "Selu", "Softplus", "Floor", "Ceil", "Round", "Sin", "Cos", "IsInf", "Dropout"}
NUMERIC = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Mod", "Neg", "Abs", "Sign", "Equal", "Less", "Greater",
           "LessOrEqual", "GreaterOrEqual", "Range", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
           "ArgMax", "ArgMin", "TopK", "Relu", "IsNaN", "Gelu"}
BOOL_ONLY = {"And", "Or", "Xor", "Not"}
NO_UINT8 = {"Gather": (0,), "GatherElements": (0,), "Expand": (0,), "Trilu": (0,), "Einsum": (0,), "Where": (1, 2)}






def _zero_point_problem(node: Any, g: GraphIndex) -> str:
    if len(node.input) < 3 or not node.input[2]:
        return ""  # no zero point: it is 0
    value = g.value(node.input[2])
    if value is None:
        return f"zero point '{node.input[2]}' is not a constant; TensorRT needs a constant zero point of 0"
    if np.any(value != 0):
        return f"zero point must be 0 (symmetric quantization); '{node.input[2]}' holds {np.unique(value)[:4].tolist()}"
    return ""


def _quantized_type(node: Any, g: GraphIndex) -> int | None:
    """The element type of the quantized side of a Q/DQ node, None where unknown."""
    if len(node.input) >= 3 and node.input[2]:
        return g.types.get(node.input[2])
    if node.op_type == "QuantizeLinear":  # ONNX: no zero point and no output_dtype -> uint8
        return attr(node, "output_dtype", 0) or TP.UINT8
    return g.types.get(node.input[0])


def _qtype_problem(node: Any, g: GraphIndex) -> str:
    qtype = _quantized_type(node, g)
    if qtype is None or qtype in (TP.INT8, TP.FLOAT8E4M3FN, TP.INT4):
        return ""
    if qtype == TP.UINT8:
        at_boundary = (node.op_type == "QuantizeLinear" and node.output[0] in g.output_names) or \
                      (node.op_type == "DequantizeLinear" and node.input[0] in g.input_names)
        return "" if at_boundary else \
            "UINT8 Q/DQ inside the network; TensorRT takes UINT8 only on network inputs/outputs (quantize to INT8)"
    if qtype == TP.INT32:
        return (f"INT32 {node.op_type} (a quantized bias, as onnxruntime writes it): TensorRT quantizes INT8/FP8/INT4 only "
                "(onnx-tensorrt#850); keep biases float (onnxruntime extra_options QuantizeBias=False)")
    return f"{type_name(qtype)} Q/DQ: TensorRT quantizes to INT8, FP8 (E4M3) or INT4 only"


def _topk_problem(node: Any, g: GraphIndex) -> str:
    if attr(node, "sorted", 1) != 1:
        return "TensorRT's TopK needs sorted=1"
    if len(node.input) > 1:  # opset >= 10: K is an input
        value = g.value(node.input[1])
        k = None if value is None else int(np.asarray(value).reshape(-1)[0])
    else:  # opset 9: K is the attribute k
        k = attr(node, "k", None)
    if k is None or k >= TOPK_MAX_K:
        return f"TensorRT's TopK needs a constant K < {TOPK_MAX_K}; K is {'not a constant' if k is None else k}"
    return ""


def _custom_domain_problem(node: Any) -> str:
    op, domain = node.op_type, node.domain
    if domain == "com.microsoft":
        return (f"'com.microsoft::{op}' is an ONNX Runtime contrib op (ORT's transformer optimizer and quantizer write "
                "these); TensorRT's ONNX parser has no importer for it and would look for a plugin of that name: "
                "check the graph as exported, before ORT's optimizer")
    return f"'{domain}::{op}' is not a standard ONNX op; TensorRT would need a plugin for it"


def _type_problem(node: Any, g: GraphIndex) -> str:
    """[ops] Supported Types, checked on the data input where its element type is known."""
    op = node.op_type
    seen = [(name, g.types[name]) for name in (*node.input, *node.output) if name and name in g.types]
    odd = next(((name, t) for name, t in seen if t not in TRT_TYPES), None)
    if odd is not None:
        return f"TensorRT has no {type_name(odd[1])} tensors ('{odd[0]}')"
    for slot in NO_UINT8.get(op, ()):
        if len(node.input) > slot and g.types.get(node.input[slot]) == TP.UINT8:
            return f"TensorRT's {op} does not take UINT8 input '{node.input[slot]}'"
    data = g.types.get(node.input[0]) if node.input and node.input[0] else None
    allowed = FLOATS if op in FLOAT_ONLY else FLOATS | INTS if op in NUMERIC else {TP.BOOL} if op in BOOL_ONLY else None
    if data is None or allowed is None or data in allowed or (data == TP.INT8 and op not in BOOL_ONLY):
        return ""
    kinds = "FP32/FP16/BF16" + ("/INT32/INT64" if op in NUMERIC else "") if op not in BOOL_ONLY else "BOOL"
    return f"TensorRT's {op} takes {kinds} only; input '{node.input[0]}' is {type_name(data)}"


def _axes_problem(node: Any, g: GraphIndex, version: tuple[int, int]) -> str:
    op = node.op_type
    slot, tensor_from = AXES_INPUT.get(op, (1, None) if op.startswith("Reduce") else (None, None))
    if slot is None or len(node.input) <= slot or not node.input[slot] or g.is_constant(node.input[slot]):
        return ""
    if tensor_from is not None and version >= tensor_from:
        return ""
    later = f" (TensorRT {tensor_from[0]}.{tensor_from[1]} takes a tensor)" if tensor_from else ""
    return f"{op}'s axes input '{node.input[slot]}' must be an initializer (constant) for TensorRT{later}"


def _op_problem(node: Any, g: GraphIndex, version: tuple[int, int]) -> str:
    """The restrictions of single ops ([ops], [log], [hw])."""
    op = node.op_type
    if op == "TopK":
        return _topk_problem(node, g)
    if op == "Cast" and attr(node, "to", TP.FLOAT) not in CAST_TO:
        return f"TensorRT casts to FP32/FP16/BF16/INT32/INT64/UINT8/BOOL only, not {type_name(attr(node, 'to', 0))}"
    if op == "LayerNormalization" and any(o and (o in g.consumers or o in g.output_names) for o in node.output[1:]):
        return "TensorRT's LayerNormalization has only the first output Y; Mean/InvStdDev are used here"
    if op == "Range" and len({g.types.get(i) for i in node.input[:3]}) > 1:
        return "TensorRT's Range needs start, limit and delta of one type"
    if op == "Dropout" and len(node.input) > 2 and node.input[2]:
        training = g.value(node.input[2])
        if training is None or bool(np.asarray(training).reshape(-1)[0]):
            return "TensorRT's Dropout needs training_mode as an initializer that is False"
    if op == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings") for a in node.attribute):
        return "TensorRT's Constant takes no sparse_value, value_string or value_strings"
    if op == "Einsum" and version < (10, 12):
        terms = attr(node, "equation", "").replace(" ", "").split("->")[0].split(",")
        if any(len(set(t.replace("...", ""))) < len(t.replace("...", "")) for t in terms):
            return "TensorRT's Einsum takes no diagonal (a repeated index in one operand) before 10.12"
    if op == "Resize":
        if attr(node, "mode", "nearest") not in ("nearest", "linear"):
            return f"TensorRT resizes with mode nearest or linear only, not {attr(node, 'mode', '')}"
        if attr(node, "antialias", 0):
            return "TensorRT's Resize does not support antialias"
    if op in POOLING:
        if len(attr(node, "kernel_shape", [])) not in (2, 3):
            return "TensorRT pools in 2D or 3D only"
        if any(d != 1 for d in attr(node, "dilations", [])):
            return "TensorRT's pooling does not support dilations"
    return ""


def _gpu_problem(node: Any, g: GraphIndex, version: tuple[int, int]) -> str:
    """Why TensorRT `version`'s ONNX parser rejects `node`; "" when it takes it."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return _custom_domain_problem(node)
    if op in ADDED_IN and version < ADDED_IN[op]:
        added = ADDED_IN[op]
        return f"TensorRT's ONNX parser takes {op} from TensorRT {added[0]}.{added[1]} on"
    if op not in ADDED_IN and (op in UNSUPPORTED or op.startswith(UNSUPPORTED_PREFIXES)):
        return f"TensorRT's ONNX parser does not support {op}"
    if op in QDQ:
        return _zero_point_problem(node, g) or _qtype_problem(node, g)
    return _type_problem(node, g) or _axes_problem(node, g, version) or _op_problem(node, g, version)


def check_tensorrt(model: Any, dla: bool, gpu_fallback: bool, trt_major: int, *,
                   input_shapes: dict[str, tuple[int, ...]] | None = None,
                   trt_version: tuple[int, int] | None = None) -> list[NodeSupport]:
    """Support of every top-level node under TensorRT `trt_version` (default: `trt_major`.0, the
    oldest release of that major), on the GPU or (dla=True) on a DLA core. `input_shapes` names the
    inputs the build pins to one shape (trtexec --shapes), which makes a dynamic ONNX static for DLA;
    a model whose inputs are fixed and whose value_info holds the inferred shapes (edgekd.graph.shapes)
    lets the DLA rules check shapes and fold shape arithmetic."""
    from edgekd.analysis.rules_dla import dla_verdict, dynamic_reason

    version = trt_version or (trt_major, 0)
    g = GraphIndex(model)
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    low, high = OPSETS[version[0]]
    if opset is None or not low <= opset <= high:
        why = f"the model's ONNX opset {opset} is outside the {low}-{high} TensorRT {version[0]}.x's ONNX parser supports"
        return [NodeSupport(name, n.op_type, "unsupported", why) for name, n in zip(names, model.graph.node)]
    dynamic = dynamic_reason(g, input_shapes) if dla else ""
    result = []
    for name, node in zip(names, model.graph.node):
        problem = _gpu_problem(node, g, version)
        if problem:
            result.append(NodeSupport(name, node.op_type, "unsupported", problem))
            continue
        off_dla, note = dla_verdict(node, g, dynamic, version[0]) if dla else ("", "")
        runs_on = "accelerator" if not off_dla else ("fallback" if gpu_fallback else "unsupported")
        reason = off_dla if gpu_fallback or not off_dla else f"{off_dla}, and GPU fallback is off"
        result.append(NodeSupport(name, node.op_type, runs_on, reason or note))
    return result


def check_qdq_symmetric(model: Any) -> list[str]:
    """Names of the Q/DQ nodes whose zero point is not a constant 0 (TensorRT needs symmetric Q/DQ)."""
    g = GraphIndex(model)
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)
            if n.op_type in QDQ and _zero_point_problem(n, g)]
