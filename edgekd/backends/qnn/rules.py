"""The Qualcomm HTP's quantization rules, checked on a QDQ graph: activation and weight types, the
MatMul input pairs the HTP runs, static shapes, no control flow (../shared/HARDWARE.md "Mobile NPU")."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


_ACTIVATION_TYPES = ("uint8", "uint16")
_MATMUL_PAIRS = {("uint8", "uint8"), ("uint8", "uint16"), ("uint16", "uint8")}
_BIAS_SLOTS = {("Conv", 2), ("ConvTranspose", 2), ("Gemm", 2), ("LayerNormalization", 2)}  # ORT quantizes these as int32 biases


def shape_problems(model: onnx.ModelProto) -> list[str]:
    """Graph inputs/outputs without a static, non-empty shape (the HTP needs static shapes), one line each."""
    initializers = {i.name for i in model.graph.initializer}
    problems = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in (v for v in values if v.name not in initializers):
            if not value.type.tensor_type.HasField("shape"):
                problems.append(f"graph {kind} '{value.name}' has no shape")
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value == 0:
                    problems.append(f"graph {kind} '{value.name}' axis {axis} is 0 (an empty tensor, such as an empty "
                                    "KV cache); the HTP runs no empty tensors")
                elif not (dim.HasField("dim_value") and dim.dim_value > 0):
                    label = dim.dim_param or "unknown"
                    problems.append(f"graph {kind} '{value.name}' axis {axis} is dynamic ('{label}'); the HTP needs static shapes")
    return problems


def check_htp_rules(model: onnx.ModelProto) -> list[str]:
    """Violations of the HTP's rules (empty: none): every activation Q/DQ uint8 or uint16, every
    weight uint8 (int32 only as a Conv/Gemm bias), quantized MatMul input pairs u8/u8, u8/u16 or
    u16/u8, static graph input/output shapes, no Loop or If."""
    from onnx import helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attribute(node, "value")
            if value is not None:
                constants[node.output[0]] = value
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, slot))

    def dtype_name(tensor: Any) -> str:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)))

    def qdq_type(node: onnx.NodeProto) -> str:
        if len(node.input) > 2 and node.input[2]:
            zero_point = constants.get(node.input[2])
            return dtype_name(zero_point) if zero_point is not None else "unknown"
        if node.op_type == "QuantizeLinear":
            output_dtype = _attribute(node, "output_dtype")
            return str(np.dtype(helper.tensor_dtype_to_np_dtype(output_dtype))) if output_dtype else "uint8"
        if node.input[0] in constants:
            return dtype_name(constants[node.input[0]])
        source = producers.get(node.input[0])
        return qdq_type(source) if source is not None and source.op_type == "QuantizeLinear" else "unknown"

    problems = [f"{n.op_type} '{n.name}': control flow ({n.op_type}) cannot run on the HTP"
                for n in graph.node if n.op_type in ("Loop", "If")]
    problems += shape_problems(model)
    for node in (n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")):
        found = qdq_type(node)
        if node.op_type == "DequantizeLinear" and node.input[0] in constants:
            uses = consumers.get(node.output[0], [])
            if found == "int32" and uses and all(use in _BIAS_SLOTS for use in uses):
                continue  # a bias: int32, scale = input scale x weight scale
            if found != "uint8":
                problems.append(f"{node.op_type} '{node.name}': weight type {found}, the HTP needs uint8")
        elif found not in _ACTIVATION_TYPES:
            problems.append(f"{node.op_type} '{node.name}': activation type {found}, the HTP needs uint8 or uint16")
    for node in (n for n in graph.node if n.op_type == "MatMul"):
        sources = [producers.get(name) for name in node.input[:2]]
        if all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            pair = tuple(qdq_type(s) for s in sources)
            if pair not in _MATMUL_PAIRS:
                problems.append(f"MatMul '{node.name}': input types {pair[0]}/{pair[1]}, the HTP runs u8/u8, u8/u16, u16/u8")
    return problems
