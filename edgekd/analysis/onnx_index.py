"""An ONNX graph indexed for rule checks: producers, consumers, constants and element types of tensors
(shared by the TensorRT and DLA rules)."""
from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto as TP

from edgekd.common.toolchain import (
    require,  # onnx is a core dependency; element types by name
)

QDQ = {"QuantizeLinear", "DequantizeLinear"}
FOLDABLE = QDQ | {"Identity", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}
FLOATS = {TP.FLOAT, TP.FLOAT16, TP.BFLOAT16, TP.DOUBLE}  # DOUBLE: "cast down to FLOAT" [ops]


def type_name(elem_type: int) -> str:
    return TP.DataType.Name(elem_type) if elem_type in TP.DataType.values() else str(elem_type)


class GraphIndex:
    """Lookups over one graph: constants (initializers, Constant nodes, and what folds from them),
    element types, static shapes (where value_info or shape inference gives them), producers and
    consumers."""

    def __init__(self, model: Any) -> None:
        onnx = require("onnx", "checking TensorRT op support")
        if not model.graph.value_info:  # callers that inferred shapes already pass them in value_info
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
        values = (*graph.value_info, *graph.input, *graph.output)
        self.types = {v.name: v.type.tensor_type.elem_type for v in values if v.type.tensor_type.elem_type}
        self.types.update({t.name: t.data_type for t in graph.initializer})
        self.shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in values
                       if v.type.tensor_type.HasField("shape")
                       and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
        self.shapes.update({t.name: tuple(t.dims) for t in graph.initializer})
        self._nodes = list(graph.node)
        self._constant: dict[str, bool] = {}
        self._build_constant: set[str] | None = None

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
        """Weights as the parser sees them: initializers, Constant nodes, and what the parser keeps
        as weights through Q/DQ, Identity, Cast and the reshaping ops."""
        if name not in self._constant:
            self._constant[name] = False  # guards against cycles
            node = self.producers.get(name)
            self._constant[name] = self.value(name) is not None or (
                node is not None and node.op_type in FOLDABLE and all(self.is_constant(i) for i in node.input if i))
        return self._constant[name]

    def is_build_constant(self, name: str) -> bool:
        """Known when the engine is built: weights, the shape of a tensor whose shape is static, and
        anything computed only from those (TensorRT folds such layers at build time). One pass in
        graph order (ONNX graphs are topologically sorted), no recursion along deep graphs."""
        if self._build_constant is None:
            self._build_constant = set()
            for node in self._nodes:
                if self.folds(node):
                    self._build_constant.update(o for o in node.output if o)
        return name in self._build_constant or self.is_constant(name)

    def folds(self, node: Any) -> bool:
        """Whether every input of `node` is known at build time (so the node becomes a constant)."""
        if node.op_type.startswith("Random") or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type in ("Shape", "Size"):
            return node.input[0] in self.shapes
        inputs = [i for i in node.input if i]
        return bool(inputs) and all(self.is_build_constant(i) for i in inputs)


def attr(node: Any, name: str, default: Any) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            value = {attr.INT: attr.i, attr.FLOAT: attr.f, attr.STRING: attr.s}.get(attr.type, list(attr.ints))
            return value.decode() if isinstance(value, bytes) else value
    return default

