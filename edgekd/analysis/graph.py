"""Per-node cost of an ONNX model: multiply-accumulates, and the elements and bytes each node reads
and writes, at the model's resolved input shapes.

Shapes: every graph input gets a concrete shape from `edgekd.graph.resolve.resolve_inputs` (--shape
values, the model, the batch, optimum's export config, task-aware defaults) unless the caller
passes resolved `inputs`; every other tensor's shape comes from `edgekd.graph.shapes.infer_shapes`
(onnx shape inference, onnxruntime's symbolic shape inference, one ONNX Runtime run). A tensor whose
shape stays unknown counts 0 elements; its node is costed from what is known and lists the tensor
in `NodeCost.unknown` (never an error).

Rules, in one place:

- Weights are initializers, Constant-node outputs and the outputs of constant-folded nodes. A node
  is constant-folded (`NodeCost.folded`) when it is computed only from weights, or is a Shape/Size
  of a tensor whose shape is static at the resolved inputs: runtimes compute these once at build
  time (the shape arithmetic of transformer exports).
- A weight that a DequantizeLinear expands is counted once, on the node that uses it, at its stored
  (quantized) type; that weight DequantizeLinear itself costs nothing (its scale/zero-point are
  per-channel vectors, left out).
- Gather (and GatherElements/GatherND) on a weight, e.g. an embedding table, reads the rows it
  gathers (as many elements as it writes), not the whole table.
- QDQ models (onnxruntime.quantization, QuantFormat.QDQ): QuantizeLinear, DequantizeLinear and
  DynamicQuantizeLinear are op_class "quant" ("quant_axis" with a per-axis scale). A compute node costs its input at the stored type of
  the DequantizeLinear that feeds it (int8: 1 byte/element) and its output at the type of the
  QuantizeLinear that consumes it, when every consumer is one. This is how runtimes run QDQ graphs
  (the Q/DQ pairs fold into integer kernels); the Q/DQ nodes themselves are costed at their own
  types, so a caller can price them separately (estimate.py fuses the interior ones away).
- MACs: Conv and ConvTranspose (groups and depthwise included), Gemm, MatMul (batched, with
  broadcast: output elements x the shared dim), and their ONNX Runtime forms (QLinearConv,
  FusedConv, QGemm, FusedMatMul, ...). A convolution of group > 1 is op class "depthwise"
  (except ONNX Runtime's NCHWc ones, see _node_class). Every other op has 0 MACs (pooling, normalization,
  elementwise and data movement are priced by bytes moved).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgekd.common.tempdirs import temp_dir
from edgekd.graph.inputs import ModelInputs, ShapeError

if TYPE_CHECKING:
    import onnx

    from edgekd.graph.shapes import InferredShapes


_CLASS_OF: dict[str, str] = {}
for _cls, _ops in {
    "conv": "Conv ConvTranspose ConvInteger QLinearConv FusedConv",
    "gemm": "Gemm MatMul MatMulInteger QLinearMatMul Einsum QGemm FusedGemm FusedMatMul MatMulIntegerToFloat "
            "DynamicQuantizeMatMul MatMulNBits",
    "pool": "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool MaxRoiPool "
            "ReduceMean ReduceMax ReduceMin ReduceSum ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp "
            "QLinearAveragePool QLinearGlobalAveragePool NhwcMaxPool",
    "norm": "BatchNormalization LayerNormalization InstanceNormalization GroupNormalization "
            "RMSNormalization LpNormalization LRN MeanVarianceNormalization SkipLayerNormalization "
            "SimplifiedLayerNormalization SkipSimplifiedLayerNormalization",
    "activation": "Relu LeakyRelu PRelu Sigmoid HardSigmoid HardSwish Tanh Clip Elu Selu Celu Gelu "
                  "Softplus Softsign Mish ThresholdedRelu Softmax LogSoftmax Hardmax Erf "
                  "BiasGelu FastGelu QuickGelu QLinearSigmoid QLinearLeakyRelu QLinearSoftmax BiasSoftmax",
    "elementwise": "Add Sub Mul Div Pow Sqrt Exp Log Abs Neg Reciprocal Max Min Sum Mean Where Equal "
                   "Less LessOrEqual Greater GreaterOrEqual Not And Or Xor Floor Ceil Round Sign Cast "
                   "CastLike Sin Cos Tan Mod BitShift IsNaN IsInf QLinearAdd QLinearMul QLinearWhere",
    "data_movement": "Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Gather "
                     "GatherElements GatherND Expand Tile Pad Identity Shape Size Resize Upsample "
                     "DepthToSpace SpaceToDepth ConstantOfShape ScatterND ScatterElements Range "
                     "ReorderInput ReorderOutput QLinearConcat",
    "quant": "QuantizeLinear DequantizeLinear DynamicQuantizeLinear",
}.items():  # ONNX ops, and the com.microsoft ops of ONNX Runtime's optimized graphs
    for _op in _ops.split():
        _CLASS_OF[_op] = _cls

_GATHERS = frozenset({"Gather", "GatherElements", "GatherND"})
_NOT_FOLDABLE = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                           "Bernoulli", "Dropout"})


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
    unknown: tuple[str, ...] = ()  # tensors of this node whose shape stayed unknown (counted as 0 elements)
    folded: bool = False  # computed at build time from weights and static shapes (costs nothing at run time)


@dataclass(frozen=True)
class GraphCosts:
    """Every node's cost, with what the shapes came from."""

    nodes: list[NodeCost]
    inputs: ModelInputs  # the resolved graph inputs the costs are for
    methods: list[str]  # how the shapes were found (edgekd.graph.shapes.infer_shapes)
    tensor_elems: dict[str, int] = field(default_factory=dict)  # activation tensor -> elements (known shapes only)
    tensor_bytes: dict[str, int] = field(default_factory=dict)  # activation tensor -> bytes, at the type it is kept in
    graph_outputs: frozenset[str] = frozenset()
    qdq_fused: bool = True  # costed as if Q/DQ pairs fold into integer kernels (see graph_costs)

    @property
    def unknown(self) -> list[dict[str, object]]:
        """{"node", "op_type", "tensors"} for every node with a tensor of unknown shape."""
        return [{"node": c.name, "op_type": c.op_type, "tensors": list(c.unknown)} for c in self.nodes if c.unknown]


def op_class(op_type: str) -> str:
    """The cost class of an ONNX op type ("other" when unknown)."""
    return _CLASS_OF.get(op_type, "other")


def _node_class(node: "onnx.NodeProto", shapes: dict[str, tuple[int, ...]]) -> str:
    """op_class, with a convolution of group > 1 (depthwise, grouped) as "depthwise": it does not
    map to one GEMM (ONNX Runtime's NCHWc convolutions, domain com.microsoft.nchwc, stay "conv": its
    blocked-layout kernels run groups natively); and a Quantize/DequantizeLinear with a per-axis
    scale (per-channel weights) as "quant_axis": runtimes loop over its channels."""
    cls = op_class(node.op_type)
    if cls == "conv" and node.op_type != "ConvTranspose" and _attr(node, "group", 1) > 1 and node.domain != "com.microsoft.nchwc":
        return "depthwise"
    if cls == "quant" and len(node.input) > 1 and math.prod(shapes.get(node.input[1], ())) > 1:
        return "quant_axis"
    return cls


def _itemsize(elem_type: int) -> int:
    import onnx

    if elem_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return 1  # packed two per byte; counted as one byte per element here (upper bound)
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):  # undefined or unusual types: counted as 4 bytes
        return 4


def _attr(node: "onnx.NodeProto", name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default


_CONV_WEIGHT = {"Conv": 1, "FusedConv": 1, "ConvInteger": 1, "QLinearConv": 3}  # input slot of the weight
_MATMULS = frozenset({"MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "MatMulIntegerToFloat",
                      "DynamicQuantizeMatMul"})


def _macs(node: "onnx.NodeProto", shape: Callable[[str], tuple[int, ...]]) -> int:
    """MACs of one node from its input/output shapes (0 for ops that are not conv/gemm). `shape`
    raises KeyError for a tensor whose shape is unknown."""
    op = node.op_type
    if op in _CONV_WEIGHT:  # each output element (N * C_out * spatial) needs C_in/group * prod(k) MACs
        return math.prod(shape(node.output[0])) * math.prod(shape(node.input[_CONV_WEIGHT[op]])[1:])
    if op == "ConvTranspose":  # each input element scatters into C_out/group * prod(k) outputs
        return math.prod(shape(node.input[0])) * math.prod(shape(node.input[1])[1:])
    if op in ("Gemm", "FusedGemm", "QGemm"):
        a = shape(node.input[0])
        return math.prod(shape(node.output[0])) * (a[0] if _attr(node, "transA", 0) else a[1])
    if op in _MATMULS:  # batched and broadcast: every output element is one dot product over a's last dim
        a = shape(node.input[0])
        return math.prod(shape(node.output[0])) * (a[-2] if _attr(node, "transA", 0) and len(a) > 1 else a[-1])
    return 0


class _Graph:
    """The model's tensors (shapes, types, producers, consumers) and which of them are weights."""

    def __init__(self, inferred: "InferredShapes", qdq_fused: bool = True) -> None:
        graph = inferred.model.graph
        self.qdq_fused = qdq_fused
        self.nodes = list(graph.node)
        self.shapes = inferred.shapes
        self.types = inferred.types
        self.producer = {out: n for n in graph.node for out in n.output if out}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for name in n.input:
                if name:
                    self.consumers.setdefault(name, []).append(n)
        self.graph_outputs = frozenset(o.name for o in graph.output)
        self.constants = {t.name for t in graph.initializer}
        self.constants |= {out for n in graph.node if n.op_type == "Constant" for out in n.output}
        self.folded: set[str] = set()  # node ids (id()) computed at build time
        self._fold()

    def _fold(self) -> None:
        """Nodes computed only from weights, or Shape/Size of a static-shaped tensor: their outputs
        become weights. Weight DequantizeLinear outputs stay out of `constants` (counted at the
        stored type by weight_dequant) but do let their consumers fold."""
        known = set(self.constants)
        for node in self.nodes:
            if node.op_type == "Constant" or node.op_type in _NOT_FOLDABLE or (
                    not self.qdq_fused and node.op_type == "DequantizeLinear"):  # the runtime runs it
                continue
            ins = [t for t in node.input if t]
            if node.op_type in ("Shape", "Size"):
                foldable = bool(ins) and ins[0] in self.shapes
            else:
                foldable = bool(ins) and all(t in known for t in ins)
            if foldable:
                known.update(o for o in node.output if o)
                if not self.weight_dequant(node):
                    self.folded.add(id(node))
                    self.constants.update(o for o in node.output if o)

    def elems(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else math.prod(shape)

    def weight_dequant(self, node: "onnx.NodeProto | None") -> bool:
        return (self.qdq_fused and node is not None and node.op_type == "DequantizeLinear"
                and node.input[0] in self.constants)

    def type_of(self, name: str) -> int:
        import onnx

        return self.types.get(name, onnx.TensorProto.FLOAT)

    def read_type(self, name: str) -> int:
        """The type a compute node reads: the stored type behind a DequantizeLinear, else its own."""
        src = self.producer.get(name)
        if self.qdq_fused and src is not None and src.op_type == "DequantizeLinear":
            return self.type_of(src.input[0])
        return self.type_of(name)

    def write_type(self, name: str) -> int:
        """The type a compute node writes: the QuantizeLinear output type when only Qs consume it."""
        users = self.consumers.get(name, [])
        if (self.qdq_fused and users and name not in self.graph_outputs
                and all(u.op_type == "QuantizeLinear" for u in users)):
            return self.type_of(users[0].output[0])
        return self.type_of(name)

    def kept_type(self, name: str) -> int:
        """The type a tensor between compute nodes is kept in (Q/DQ-aware)."""
        src = self.producer.get(name)
        if self.qdq_fused and src is not None and src.op_type == "DequantizeLinear":
            return self.read_type(name)
        return self.write_type(name)


def _cost(g: _Graph, node: "onnx.NodeProto", name: str) -> NodeCost:
    """One node's cost (see the module rules)."""
    cls = _node_class(node, g.shapes)
    own = cls in ("quant", "quant_axis")  # Q/DQ nodes are costed at their own types
    if g.weight_dequant(node):  # stored weight: counted on the node that uses it
        return NodeCost(name, node.op_type, cls, 0, 0, 0, 0, 0, 0, 0, (), tuple(node.output), folded=True)
    unknown: list[str] = []

    def elems(tensor: str) -> int:
        found = g.elems(tensor)
        if found is None:
            unknown.append(tensor)
        return found or 0

    sums = {"in_e": 0, "in_b": 0, "w_e": 0, "w_b": 0, "out_e": 0, "out_b": 0}
    act_inputs: list[str] = []
    gathers_rows = node.op_type in _GATHERS
    for slot, tensor in enumerate(node.input):
        if not tensor:
            continue
        src = g.producer.get(tensor)
        if tensor in g.constants or (g.weight_dequant(src) and not own):
            stored = src.input[0] if tensor not in g.constants and src is not None else tensor
            count = elems(node.output[0]) if gathers_rows and slot == 0 else elems(stored)  # rows gathered
            sums["w_e"] += count
            sums["w_b"] += count * _itemsize(g.type_of(stored))
        else:
            count = elems(tensor)
            sums["in_e"] += count
            sums["in_b"] += count * _itemsize(g.type_of(tensor) if own else g.read_type(tensor))
            act_inputs.append(tensor)
    outputs = tuple(filter(None, node.output))
    for tensor in outputs:
        count = elems(tensor)
        size = count * _itemsize(g.type_of(tensor) if own or node.op_type == "Constant" else g.write_type(tensor))
        key = "w" if node.op_type == "Constant" else "out"
        sums[f"{key}_e"] += count
        sums[f"{key}_b"] += size
    try:
        macs = _macs(node, lambda t: g.shapes[t])
    except KeyError:
        macs = 0  # a shape it needs is unknown: listed in `unknown` already
    return NodeCost(name=name, op_type=node.op_type, op_class=cls, macs=macs,
                    input_bytes=sums["in_b"], output_bytes=sums["out_b"], weight_bytes=sums["w_b"],
                    input_elems=sums["in_e"], output_elems=sums["out_e"], weight_elems=sums["w_e"],
                    inputs=tuple(act_inputs), outputs=() if node.op_type == "Constant" else outputs,
                    unknown=tuple(dict.fromkeys(unknown)), folded=node.op_type == "Constant" or id(node) in g.folded)


def model_inputs(model: "onnx.ModelProto | Path", batch: int = 1) -> ModelInputs:
    """The model's inputs resolved at `batch` (edgekd.graph.resolve; a config.json beside a model
    file is read), as graph_costs resolves them."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return _resolved(model, None, batch)
    return _resolved(onnx.load(str(model), load_external_data=False), Path(model), batch)


def _resolved(model: "onnx.ModelProto", path: Path | None, batch: int) -> ModelInputs:
    from edgekd.graph.resolve import resolve_inputs

    inputs = resolve_inputs(model, path, batch=batch)
    if batch != 1 and inputs.inputs and all(i.batch_axis is None for i in inputs.inputs):
        raise ShapeError(f"the model fixes its batch ({inputs.describe()}); asked for batch {batch}",
                         "export the model with a dynamic batch axis, or use batch 1")
    return inputs


def graph_costs(model: "onnx.ModelProto | Path", batch: int = 1, inputs: ModelInputs | None = None,
                qdq_fused: bool = True) -> GraphCosts:
    """Cost of every node of `model` (graph order, which ONNX requires to be topological) at
    `inputs` (default: resolved from the model at `batch`, see the module docstring). With
    `qdq_fused` false every Q/DQ node, weight DequantizeLinear included, is an ordinary node that
    reads and writes its own types: how a runtime that did not fuse them runs them (the graph
    ONNX Runtime has optimized, onnxruntime_graph)."""
    import onnx

    from edgekd.graph.shapes import infer_shapes

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    path = None
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        model = onnx.load(str(path))
    if inputs is None:
        inputs = _resolved(model, path, batch)
    inferred = infer_shapes(model, inputs)
    g = _Graph(inferred, qdq_fused)
    nodes = [_cost(g, node, node.name or f"{node.op_type}_{i}") for i, node in enumerate(g.nodes)]
    elems: dict[str, int] = {}
    for c in nodes:
        for tensor in (*c.inputs, *c.outputs):
            count = g.elems(tensor)
            if count is not None:
                elems[tensor] = count
    kept = {t: n * _itemsize(g.kept_type(t)) for t, n in elems.items()}
    return GraphCosts(nodes, inputs, list(inferred.methods), elems, kept, g.graph_outputs, qdq_fused)


def node_costs(model: "onnx.ModelProto | Path", batch: int = 1, inputs: ModelInputs | None = None) -> list[NodeCost]:
    """graph_costs(...).nodes: the cost of every node, in graph order."""
    return graph_costs(model, batch, inputs).nodes


ORT_LEVELS = ("basic", "extended", "all")


def onnxruntime_graph(model: "onnx.ModelProto | Path", level: str) -> "onnx.ModelProto":
    """The graph ONNX Runtime's CPU execution provider runs for `model` after its graph
    optimizations at `level` (basic, extended, all): its fusions (FusedConv, BiasGelu,
    SkipLayerNormalization, QLinearConv, ...), what it left of the Q/DQ nodes, its layouts (NCHWc
    at "all"). Raises RuntimeError with ONNX Runtime's message when it cannot load the model."""

    import onnx
    import onnxruntime as ort

    levels = dict(zip(ORT_LEVELS, (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL)))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.log_severity_level = 3
    source = str(model) if not isinstance(model, onnx.ModelProto) else model.SerializeToString()
    with temp_dir("ort-optimize") as tmp:
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        try:
            ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own error types; the caller says what it costs instead
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(first) from exc
        return onnx.load(opts.optimized_model_filepath)
