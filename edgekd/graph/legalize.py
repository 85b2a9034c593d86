"""Exact rewrites that make real exports run where the runtimes trip over how they were written.

- A MaxPool/AveragePool whose window covers the whole spatial input and yields one value per channel
  is a global pooling. Hugging Face's EfficientNet pools with `AvgPool2d(hidden_dim, ceil_mode=True)`:
  a 1280x1280 window over a 7x7 map. ONNX Runtime's QNN EP rejects that window, and its NHWC layout
  transform then leaves the session invalid (onnxruntime 1.32 + onnxruntime-qnn 2.7: "was inserted
  using the NHWC format as requested by QNNExecutionProvider, but was not selected by that EP"), and
  OpenVINO's CPU plugin refuses it in shape inference (2026.4: "Check 'cmp::le(kernel, dim.get_length())'").
  GlobalAveragePool/GlobalMaxPool compute the same numbers (no padding: every window holds exactly
  the valid elements) and every runtime runs them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.graph.inputs import ModelInputs

if TYPE_CHECKING:
    import onnx

_GLOBAL = {"AveragePool": "GlobalAveragePool", "MaxPool": "GlobalMaxPool"}


def _ints(node: "onnx.NodeProto", name: str) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == name), [])


def _whole_window(node: "onnx.NodeProto", shapes: dict[str, tuple[int, ...]]) -> bool:
    """True when the pooling's window covers its whole (known) spatial input, without padding, and
    its output is 1 per spatial axis."""
    src, out = shapes.get(node.input[0]), shapes.get(node.output[0])
    kernel, pads = _ints(node, "kernel_shape"), _ints(node, "pads")
    auto_pad = next((a.s.decode() for a in node.attribute if a.name == "auto_pad"), "NOTSET")
    if src is None or out is None or len(src) != len(kernel) + 2 or len(node.output) != 1:
        return False
    return (auto_pad in ("NOTSET", "VALID") and not any(pads) and all(k >= s for k, s in zip(kernel, src[2:]))
            and all(o == 1 for o in out[2:]) and not any(d != 1 for d in _ints(node, "dilations")))


def legalize(model_path: Path, out_path: Path, inputs: ModelInputs) -> list[str]:
    """Write `model_path` with the rewrites above applied to `out_path`; returns one note per rewrite
    (none: the file is written unchanged)."""
    import onnx
    from onnx import helper

    from edgekd.graph.shapes import infer_shapes

    model = onnx.load(str(model_path))
    shapes = infer_shapes(model, inputs).shapes
    notes = []
    for index, node in enumerate(model.graph.node):
        if node.op_type in _GLOBAL and node.domain in ("", "ai.onnx") and _whole_window(node, shapes):
            name, op, window = node.name or f"{node.op_type}_{index}", node.op_type, _ints(node, "kernel_shape")
            model.graph.node[index].CopyFrom(helper.make_node(_GLOBAL[op], [node.input[0]], list(node.output), name=name))
            notes.append(f"{name}: {op} with a {window} window over a {list(shapes[node.input[0]][2:])} input is "
                         f"{_GLOBAL[op]} (the same numbers; the QNN EP and OpenVINO's CPU plugin reject windows larger than the input)")
    onnx.save(model, str(out_path))
    return notes
