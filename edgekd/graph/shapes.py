"""Shape inference that survives real exports. With every input fixed to its resolved shape:

1. ONNX's own shape inference (with data propagation, so Shape -> Gather -> Reshape chains resolve);
2. where it leaves tensors unknown (optimum's Pad/Slice/Expand exports, ops with data-dependent
   shapes), ONNX Runtime's symbolic shape inference (`onnxruntime.tools.symbolic_shape_infer`);
3. where tensors are still unknown, the shapes ONNX Runtime reports when it runs the graph once on
   generated feeds (edgekd.graph.feeds) with those tensors added as outputs.

What is still unknown after that is reported per node (`unknown`), never raised.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgekd.common.fsutil import scratch_cwd
from edgekd.graph.inputs import ModelInputs

if TYPE_CHECKING:
    import onnx

Shape = tuple[int, ...]


@dataclass
class InferredShapes:
    model: "onnx.ModelProto"  # inputs fixed to the resolved shapes; value_info holds every shape found
    shapes: dict[str, Shape]  # tensor -> static shape (graph inputs, initializers, node outputs)
    types: dict[str, int]  # tensor -> ONNX element type
    methods: list[str] = field(default_factory=list)  # how the shapes were found, in order
    unknown: list[dict[str, str]] = field(default_factory=list)  # {"node", "op_type", "tensor"} still unknown

    def shape(self, name: str) -> Shape | None:
        return self.shapes.get(name)


def fix_inputs(model: "onnx.ModelProto", inputs: ModelInputs) -> "onnx.ModelProto":
    """A copy of `model` whose graph inputs have the resolved shapes (every dim a value)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    shapes = inputs.shapes()
    for value in fixed.graph.input:
        if value.name not in shapes:
            continue
        tt = value.type.tensor_type
        tt.ClearField("shape")
        for size in shapes[value.name]:
            tt.shape.dim.add().dim_value = size
    return fixed


def _collect(model: "onnx.ModelProto", shapes: dict[str, Shape], types: dict[str, int]) -> None:
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = value.type.tensor_type
        if tt.elem_type:
            types.setdefault(value.name, tt.elem_type)
        if value.name not in shapes and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tt.shape.dim)
    for init in model.graph.initializer:
        shapes.setdefault(init.name, tuple(init.dims))
        types.setdefault(init.name, init.data_type)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes.setdefault(node.output[0], tuple(node.attribute[0].t.dims))
            types.setdefault(node.output[0], node.attribute[0].t.data_type)


def _missing(model: "onnx.ModelProto", shapes: dict[str, Shape]) -> list[str]:
    return [out for node in model.graph.node for out in node.output if out and out not in shapes]


def _onnx_inference(model: "onnx.ModelProto") -> "onnx.ModelProto":
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - onnx raises InferenceError and others; the next method tries
        return model


def _symbolic_inference(model: "onnx.ModelProto") -> "onnx.ModelProto | None":
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:
        return None
    logging.getLogger("onnxruntime.tools.symbolic_shape_infer").setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), scratch_cwd():
            return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    except Exception:  # noqa: BLE001 - it raises on ops it has no rule for; the next method tries
        return None


def _runtime_shapes(model: "onnx.ModelProto", inputs: ModelInputs, wanted: list[str]) -> tuple[dict[str, Shape], dict[str, int], str]:
    """Run the graph once in ONNX Runtime (CPU, no graph rewrites) with `wanted` as extra outputs."""
    import numpy as np
    import onnx

    from edgekd.graph.feeds import make_feeds

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in wanted:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.log_severity_level = 4
        session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, make_feeds(inputs))
    except Exception as exc:  # noqa: BLE001 - ORT's own error types; reported per node by the caller
        return {}, {}, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    shapes, types = {}, {}
    for name, value in zip(names, values):
        if isinstance(value, np.ndarray):
            shapes[name] = tuple(value.shape)
            types[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
    return shapes, types, ""


def infer_shapes(model: "onnx.ModelProto", inputs: ModelInputs) -> InferredShapes:
    """Static shapes of every tensor of `model` with its inputs at `inputs`' shapes (see the module
    docstring for the three methods); `methods` says which ones found what."""
    import onnx

    fixed = fix_inputs(model, inputs)
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    inferred = _onnx_inference(fixed)
    _collect(inferred, shapes, types)
    methods = ["onnx.shape_inference (data propagation)"]
    missing = _missing(inferred, shapes)
    if missing:
        symbolic = _symbolic_inference(inferred)
        if symbolic is not None:
            before = len(shapes)
            _collect(symbolic, shapes, types)
            inferred = symbolic if len(shapes) > before else inferred
            methods.append(f"onnxruntime symbolic_shape_infer: {len(shapes) - before} more tensors")
        missing = _missing(inferred, shapes)
    failure = ""
    if missing:
        found, found_types, failure = _runtime_shapes(inferred, inputs, missing)
        shapes.update({k: v for k, v in found.items() if k in missing})
        for k, v in found_types.items():
            types.setdefault(k, v)
        methods.append(f"onnxruntime run once on generated feeds: {len(set(found) & set(missing))} more tensors"
                       + (f" (the run failed: {failure})" if failure else ""))
    known = {v.name for v in inferred.graph.value_info}
    for name in missing:  # record what the run found in the model, for tools that read value_info
        if name in shapes and name not in known and name in types:
            inferred.graph.value_info.append(onnx.helper.make_tensor_value_info(name, types[name], list(shapes[name])))
    unknown = [{"node": node.name or f"{node.op_type}_{i}", "op_type": node.op_type, "tensor": out}
               for i, node in enumerate(inferred.graph.node) for out in node.output if out and out not in shapes]
    return InferredShapes(inferred, shapes, types, methods, unknown)


def static_model(model: "onnx.ModelProto", inputs: ModelInputs) -> "onnx.ModelProto":
    """`model` with every graph input and output at a static shape (what the QNN HTP and DLA need):
    inputs at `inputs`' shapes, outputs and value_info from infer_shapes. Raises ShapeError naming
    the outputs whose shape stays unknown."""
    from edgekd.graph.inputs import ShapeError

    inferred = infer_shapes(model, inputs)
    result = inferred.model
    unknown = []
    for value in result.graph.output:
        shape = inferred.shape(value.name)
        if shape is None:
            unknown.append(value.name)
            continue
        tt = value.type.tensor_type
        tt.ClearField("shape")
        for size in shape:
            tt.shape.dim.add().dim_value = size
    if unknown:
        raise ShapeError(f"output(s) {', '.join(unknown)} have no static shape at inputs {inputs.describe()}",
                         "give the inputs fixed shapes with --shape, or export with static shapes")
    return result
