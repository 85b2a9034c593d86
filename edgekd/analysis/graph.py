"""Per-node cost of an ONNX model: multiply-accumulates, and the elements and bytes each node reads
and writes, from shapes that ONNX's own shape inference computes at a fixed batch.

Rules, in one place:

- Weights are initializers (and Constant-node outputs). A weight that a DequantizeLinear expands
  is counted once, on the node that uses it, at its stored (quantized) type; that weight
  DequantizeLinear itself costs nothing (its scale/zero-point are per-channel vectors, left out).
- QDQ models (onnxruntime.quantization, QuantFormat.QDQ): QuantizeLinear, DequantizeLinear and
  DynamicQuantizeLinear are op_class "quant". A compute node costs its input at the stored type of
  the DequantizeLinear that feeds it (int8: 1 byte/element) and its output at the type of the
  QuantizeLinear that consumes it, when every consumer is one. This is how runtimes run QDQ graphs
  (the Q/DQ pairs fold into integer kernels); the Q/DQ nodes themselves are costed at their own
  types, so a caller can price them separately (estimate.py fuses the interior ones away).
- MACs: Conv and ConvTranspose (groups and depthwise included), Gemm, MatMul. Every other op has
  0 MACs (pooling, normalization, elementwise and data movement are priced by bytes moved).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import onnx

OP_CLASSES = ("conv", "gemm", "pool", "norm", "activation", "elementwise", "data_movement", "quant", "other")

_CLASS_OF: dict[str, str] = {}
for _cls, _ops in {
    "conv": "Conv ConvTranspose ConvInteger QLinearConv",
    "gemm": "Gemm MatMul MatMulInteger QLinearMatMul Einsum",
    "pool": "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool MaxRoiPool "
            "ReduceMean ReduceMax ReduceMin ReduceSum ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp",
    "norm": "BatchNormalization LayerNormalization InstanceNormalization GroupNormalization "
            "RMSNormalization LpNormalization LRN MeanVarianceNormalization",
    "activation": "Relu LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Clip Elu Selu Celu Gelu "
                  "Softplus Softsign Mish ThresholdedRelu Softmax LogSoftmax Hardmax Erf",
    "elementwise": "Add Sub Mul Div Pow Sqrt Exp Log Abs Neg Reciprocal Max Min Sum Mean Where Equal "
                   "Less LessOrEqual Greater GreaterOrEqual Not And Or Xor Floor Ceil Round Sign Cast "
                   "CastLike Sin Cos Tan Mod BitShift IsNaN IsInf",
    "data_movement": "Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Gather "
                     "GatherElements GatherND Expand Tile Pad Identity Shape Size Resize Upsample "
                     "DepthToSpace SpaceToDepth ConstantOfShape ScatterND ScatterElements Range",
    "quant": "QuantizeLinear DequantizeLinear DynamicQuantizeLinear",
}.items():
    for _op in _ops.split():
        _CLASS_OF[_op] = _cls


@dataclass(frozen=True)
class NodeCost:
    name: str
    op_type: str
    op_class: str  # one of OP_CLASSES
    macs: int
    input_bytes: int  # activation inputs, at the types the runtime reads them (see the module rules)
    output_bytes: int
    weight_bytes: int
    input_elems: int
    output_elems: int
    weight_elems: int
    inputs: tuple[str, ...] = ()  # activation (non-weight) input tensor names, for graph walks
    outputs: tuple[str, ...] = ()


def op_class(op_type: str) -> str:
    """The cost class of an ONNX op type ("other" when unknown)."""
    return _CLASS_OF.get(op_type, "other")


def _with_fixed_batch(model: "onnx.ModelProto", batch: int) -> "onnx.ModelProto":
    """A copy of `model` whose graph inputs have `batch` as their first dim, shapes inferred."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import make_dim_param_fixed

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {t.name for t in fixed.graph.initializer}
    for value in fixed.graph.input:
        if value.name in initializers or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue
        first = dims[0]
        if first.HasField("dim_value"):
            if first.dim_value != batch:
                raise ValueError(f"input '{value.name}' has a fixed batch of {first.dim_value}; asked for batch {batch}")
        elif first.dim_param:
            make_dim_param_fixed(fixed.graph, first.dim_param, batch)
        else:
            first.dim_value = batch
        symbolic = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if symbolic:
            raise ValueError(f"input '{value.name}' has symbolic dims {symbolic} besides the batch; "
                             "node_costs fixes only the first (batch) dim")
    return onnx.shape_inference.infer_shapes(fixed, strict_mode=True, data_prop=True)


def _tensor_types(graph: "onnx.GraphProto") -> dict[str, tuple[int, tuple[int, ...] | None]]:
    """name -> (ONNX elem type, static shape or None) for every typed tensor of the graph."""
    types: dict[str, tuple[int, tuple[int, ...] | None]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tt = value.type.tensor_type
        shape = None
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shape = tuple(d.dim_value for d in tt.shape.dim)
        types[value.name] = (tt.elem_type, shape)
    for init in graph.initializer:
        types[init.name] = (init.data_type, tuple(init.dims))
    return types


def _itemsize(elem_type: int) -> int:
    import onnx

    if elem_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return 1  # packed two per byte; counted as one byte per element here (upper bound)
    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize


def _attr(node: "onnx.NodeProto", name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default


def _macs(node: "onnx.NodeProto", shape: Callable[[str], tuple[int, ...]]) -> int:
    """MACs of one node from its input/output shapes (0 for ops that are not conv/gemm)."""
    op = node.op_type
    if op == "Conv":  # each output element (N * C_out * spatial) needs C_in/group * prod(k) MACs
        return math.prod(shape(node.output[0])) * math.prod(shape(node.input[1])[1:])
    if op == "ConvTranspose":  # each input element scatters into C_out/group * prod(k) outputs
        return math.prod(shape(node.input[0])) * math.prod(shape(node.input[1])[1:])
    if op == "Gemm":
        a = shape(node.input[0])
        return math.prod(shape(node.output[0])) * (a[0] if _attr(node, "transA", 0) else a[1])
    if op == "MatMul":
        return math.prod(shape(node.output[0])) * shape(node.input[0])[-1]
    return 0


def node_costs(model: "onnx.ModelProto | Path", batch: int = 1) -> list[NodeCost]:
    """Cost of every node of `model` (graph order, which ONNX requires to be topological) with the
    first dim of each graph input fixed to `batch`. Raises ValueError when a shape stays unknown."""
    import onnx

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    graph = _with_fixed_batch(model, batch).graph
    types = _tensor_types(graph)

    producer = {out: n for n in graph.node for out in n.output if out}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            if name:
                consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    constants = {t.name for t in graph.initializer}
    constants |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}

    def shape(name: str) -> tuple[int, ...]:
        found = types.get(name, (0, None))[1]
        if found is None:
            raise ValueError(f"shape of tensor '{name}' is unknown after shape inference at batch {batch}")
        return found

    def elems(name: str) -> int:
        return math.prod(shape(name))

    def weight_dequant(node: onnx.NodeProto | None) -> bool:
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in constants

    def read_type(name: str) -> int:
        """The type a compute node reads: the stored type behind a DequantizeLinear, else its own."""
        src = producer.get(name)
        return types[src.input[0]][0] if src is not None and src.op_type == "DequantizeLinear" else types[name][0]

    def write_type(name: str) -> int:
        """The type a compute node writes: the QuantizeLinear output type when only Qs consume it."""
        users = consumers.get(name, [])
        if users and name not in graph_outputs and all(u.op_type == "QuantizeLinear" for u in users):
            return types[users[0].output[0]][0]
        return types[name][0]

    costs: list[NodeCost] = []
    for node in graph.node:
        cls = op_class(node.op_type)
        own = cls == "quant"  # Q/DQ nodes are costed at their own types
        name = node.name or f"{node.op_type}_{len(costs)}"
        if weight_dequant(node):  # stored weight: counted on the node that uses it
            costs.append(NodeCost(name, node.op_type, cls, 0, 0, 0, 0, 0, 0, 0, (), tuple(node.output)))
            continue
        in_elems = in_bytes = w_elems = w_bytes = out_elems = out_bytes = 0
        act_inputs: list[str] = []
        for tensor in filter(None, node.input):
            src = producer.get(tensor)
            if tensor in constants or (weight_dequant(src) and not own):
                stored = src.input[0] if tensor not in constants else tensor
                w_elems += elems(stored)
                w_bytes += elems(stored) * _itemsize(types[stored][0])
            else:
                in_elems += elems(tensor)
                in_bytes += elems(tensor) * _itemsize(types[tensor][0] if own else read_type(tensor))
                act_inputs.append(tensor)
        outputs = tuple(filter(None, node.output))
        for tensor in outputs:
            if node.op_type == "Constant":
                w_elems += elems(tensor)
                w_bytes += elems(tensor) * _itemsize(types[tensor][0])
            else:
                out_elems += elems(tensor)
                out_bytes += elems(tensor) * _itemsize(types[tensor][0] if own else write_type(tensor))
        costs.append(NodeCost(
            name=name, op_type=node.op_type, op_class=cls, macs=_macs(node, shape),
            input_bytes=in_bytes, output_bytes=out_bytes, weight_bytes=w_bytes,
            input_elems=in_elems, output_elems=out_elems, weight_elems=w_elems,
            inputs=tuple(act_inputs), outputs=() if node.op_type == "Constant" else outputs,
        ))
    return costs
