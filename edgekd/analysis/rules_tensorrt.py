"""Where each node of an ONNX model runs under TensorRT: its ONNX parser's rules, and DLA's.

Static rules from ../shared/HARDWARE.md (onnx/onnx-tensorrt docs/operators.md, the TensorRT
developer guide, "DLA supported layers and restrictions"); nothing here runs TensorRT to confirm
them. Only the top-level graph is checked (If/Loop/Scan bodies are not descended into).

runs_on: "accelerator" (the GPU, or the DLA core for DLA targets), "fallback" (a DLA target's
layer that GPU fallback moves to the GPU), "unsupported" (the parser rejects it, or a DLA target
without GPU fallback cannot place it: the build fails).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.analysis.support_types import NodeSupport
from edgekd.toolchain import require

OPSETS = (9, 20)  # default-domain opsets TensorRT's ONNX parser supports
TOPK_MAX_K = 3840
UNSUPPORTED = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear", "Unique",
               "DFT", "STFT", "SplitToSequence", "ConcatFromSequence", "BitShift", "RegexFullMatch", "TfIdfVectorizer"}
UNSUPPORTED_PREFIXES = ("Sequence", "Optional", "String", "Bitwise")  # Sequence*, Optional*, String*, Bitwise*
AXES_INPUT = {"Pad": 3, "Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "CumSum": 1}  # input index of `axes`
POOLING = {"MaxPool", "AveragePool", "LpPool"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}
# DLA: native layers; Flatten/Squeeze/Unsqueeze parse to the same shuffle layer as Reshape.
DLA_NATIVE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "BatchNormalization",
              "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "PRelu", "Add", "Sub", "Mul", "Max", "Concat", "Slice",
              "Softmax", "Resize", "Reshape", "Transpose", "LRN", "Flatten", "Squeeze", "Unsqueeze"}
DLA_NOT = {"Div", "Exp", "Log", "Sqrt", "Pow", "Min", "HardSwish", "GlobalAveragePool", "ReduceMean"}
DLA_ABSORBED = QDQ | {"Constant"}  # Q/DQ fold into their neighbours' INT8 layers; constants become weights
_FOLDABLE = QDQ | {"Identity", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}


class _Graph:
    """Lookups over one graph: constants (initializers, Constant nodes, and what folds from them),
    element types, producers and consumers."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", "checking TensorRT op support")
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - element types then come from the model as written
            pass
        self.onnx, graph = onnx, model.graph
        self.initializers = {t.name: t for t in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output if out}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.inputs = [i for i in graph.input if i.name not in self.initializers]
        self.input_names = {i.name for i in self.inputs}
        self.output_names = {o.name for o in graph.output}
        self.types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
        self.types.update({t.name: t.data_type for t in graph.initializer})
        self._constant: dict[str, bool] = {}

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer or Constant node), else None."""
        if name in self.initializers:
            return self.onnx.numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return self.onnx.numpy_helper.to_array(attr.t)
        return None

    def is_constant(self, name: str) -> bool:
        if name not in self._constant:
            self._constant[name] = False  # guards against cycles
            node = self.producers.get(name)
            self._constant[name] = self.value(name) is not None or (
                node is not None and node.op_type in _FOLDABLE and all(self.is_constant(i) for i in node.input if i))
        return self._constant[name]


def _attr(node: Any, name: str, default: Any) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            value = attr.i if attr.type == attr.INT else attr.s if attr.type == attr.STRING else list(attr.ints)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _zero_point_problem(node: Any, g: _Graph) -> str:
    if len(node.input) < 3 or not node.input[2]:
        return ""  # no zero point: it is 0
    value = g.value(node.input[2])
    if value is None:
        return f"zero point '{node.input[2]}' is not a constant; TensorRT needs a constant zero point of 0"
    if np.any(value != 0):
        return f"zero point must be 0 (symmetric quantization); '{node.input[2]}' holds {np.unique(value)[:4].tolist()}"
    return ""


def _quantized_type(node: Any, g: _Graph) -> int | None:
    """The element type of the quantized side of a Q/DQ node, None where unknown."""
    if len(node.input) >= 3 and node.input[2]:
        return g.types.get(node.input[2])
    if node.op_type == "QuantizeLinear":  # ONNX: no zero point and no output_dtype -> uint8
        return _attr(node, "output_dtype", 0) or g.onnx.TensorProto.UINT8
    return g.types.get(node.input[0])


def _qtype_problem(node: Any, g: _Graph) -> str:
    tp = g.onnx.TensorProto
    qtype = _quantized_type(node, g)
    if qtype is None or qtype in (tp.INT8, tp.FLOAT8E4M3FN, tp.INT4):
        return ""
    name = tp.DataType.Name(qtype)
    if qtype == tp.UINT8:
        at_boundary = (node.op_type == "QuantizeLinear" and node.output[0] in g.output_names) or \
                      (node.op_type == "DequantizeLinear" and node.input[0] in g.input_names)
        return "" if at_boundary else \
            "UINT8 Q/DQ inside the network; TensorRT takes UINT8 only on network inputs/outputs (quantize to INT8)"
    if qtype == tp.INT32:
        return (f"INT32 {node.op_type} (a quantized bias, as onnxruntime writes it): TensorRT quantizes INT8/FP8/INT4 only "
                "(onnx-tensorrt#850); keep biases float (onnxruntime extra_options QuantizeBias=False)")
    return f"{name} Q/DQ: TensorRT quantizes to INT8, FP8 (E4M3) or INT4 only"


def _topk_problem(node: Any, g: _Graph) -> str:
    if _attr(node, "sorted", 1) != 1:
        return "TensorRT's TopK needs sorted=1"
    if len(node.input) > 1:  # opset >= 10: K is an input
        value = g.value(node.input[1])
        k = None if value is None else int(np.asarray(value).reshape(-1)[0])
    else:  # opset 9: K is the attribute k
        k = _attr(node, "k", None)
    if k is None or k >= TOPK_MAX_K:
        return f"TensorRT's TopK needs a constant K < {TOPK_MAX_K}; K is {'not a constant' if k is None else k}"
    return ""


def _gpu_problem(node: Any, g: _Graph) -> str:
    """Why TensorRT's ONNX parser rejects `node`; "" when it takes it."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return f"'{node.domain}::{op}' is not a standard ONNX op; TensorRT would need a plugin for it"
    if op in UNSUPPORTED or op.startswith(UNSUPPORTED_PREFIXES):
        return f"TensorRT's ONNX parser does not support {op}"
    if op in QDQ:
        return _zero_point_problem(node, g) or _qtype_problem(node, g)
    axes = AXES_INPUT.get(op, 1 if op.startswith("Reduce") else None)
    if axes is not None and len(node.input) > axes and node.input[axes] and not g.is_constant(node.input[axes]):
        return f"{op}'s axes input '{node.input[axes]}' must be an initializer (constant) for TensorRT"
    if op == "TopK":
        return _topk_problem(node, g)
    if op == "Resize":
        if _attr(node, "mode", "nearest") not in ("nearest", "linear"):
            return f"TensorRT resizes with mode nearest or linear only, not {_attr(node, 'mode', '')}"
        if _attr(node, "antialias", 0):
            return "TensorRT's Resize does not support antialias"
    if op in POOLING:
        if len(_attr(node, "kernel_shape", [])) not in (2, 3):
            return "TensorRT pools in 2D or 3D only"
        if any(d != 1 for d in _attr(node, "dilations", [])):
            return "TensorRT's pooling does not support dilations"
    return ""


def _low_precision(node: Any, g: _Graph) -> bool:
    """True when a node sits inside Q/DQ (an input from DequantizeLinear or an output into
    QuantizeLinear) or reads FP16: a strongly typed network then runs it in INT8/FP16."""
    fp16 = g.onnx.TensorProto.FLOAT16
    from_dq = any(g.producers.get(i) is not None and g.producers[i].op_type == "DequantizeLinear" for i in node.input)
    to_q = any(c.op_type == "QuantizeLinear" for o in node.output for c in g.consumers.get(o, []))
    return from_dq or to_q or any(g.types.get(i) == fp16 for i in node.input)


def _dla_problem(node: Any, g: _Graph, dynamic: str, trt_major: int) -> str:
    """Why DLA cannot run `node` (which TensorRT's parser takes); "" when it can."""
    op = node.op_type
    if op in DLA_ABSORBED:
        return ""
    if op in DLA_NOT:
        return f"{op} does not run on DLA"
    if op not in DLA_NATIVE:
        return f"{op} is not among DLA's native layers"
    if op == "MatMul" and (len(node.input) < 2 or not g.is_constant(node.input[1])):
        return "MatMul runs on DLA only with a constant second input (weights)"
    if trt_major >= 11 and not _low_precision(node, g):
        return ("TensorRT 11 networks are strongly typed and this node computes in FP32 (no Q/DQ or FP16 around it); "
                "DLA runs only INT8/FP16 layers")
    return dynamic


def _dynamic_reason(g: _Graph, input_shapes: dict[str, tuple[int, ...]] | None) -> str:
    pinned = set(input_shapes or {})
    for inp in g.inputs:
        dims = inp.type.tensor_type.shape.dim
        if inp.name not in pinned and any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims):
            shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
            return (f"input '{inp.name}' has dynamic dims ({shown}); DLA needs static shapes "
                    "(min = opt = max): build with one shape")
    return ""


def check_tensorrt(model: Any, dla: bool, gpu_fallback: bool, trt_major: int, *,
                   input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[NodeSupport]:
    """Support of every top-level node under TensorRT `trt_major`, on the GPU or (dla=True) on a
    DLA core. `input_shapes` names the inputs the build pins to one shape (trtexec --shapes), which
    makes a dynamic ONNX static for DLA."""
    g = _Graph(model)
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not OPSETS[0] <= opset <= OPSETS[1]:
        why = f"the model's ONNX opset {opset} is outside the {OPSETS[0]}-{OPSETS[1]} TensorRT's ONNX parser supports"
        return [NodeSupport(name, n.op_type, "unsupported", why) for name, n in zip(names, model.graph.node)]
    dynamic = _dynamic_reason(g, input_shapes) if dla else ""
    result = []
    for name, node in zip(names, model.graph.node):
        problem = _gpu_problem(node, g)
        if problem:
            result.append(NodeSupport(name, node.op_type, "unsupported", problem))
            continue
        off_dla = _dla_problem(node, g, dynamic, trt_major) if dla else ""
        runs_on = "accelerator" if not off_dla else ("fallback" if gpu_fallback else "unsupported")
        reason = off_dla if gpu_fallback or not off_dla else f"{off_dla}, and GPU fallback is off"
        result.append(NodeSupport(name, node.op_type, runs_on, reason))
    return result


def check_qdq_symmetric(model: Any) -> list[str]:
    """Names of the Q/DQ nodes whose zero point is not a constant 0 (TensorRT needs symmetric Q/DQ)."""
    g = _Graph(model)
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)
            if n.op_type in QDQ and _zero_point_problem(n, g)]
