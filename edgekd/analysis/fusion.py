"""Which nodes the runtimes execute, and as which kernels: the fusions ONNX Runtime, TensorRT and
QNN really apply, found on float graphs and Q/DQ graphs alike (interior Q/DQ pairs are looked
through when patterns are matched).

Nodes that cost nothing at run time:
- constant-folded nodes (computed at build time from weights and static shapes, see graph.py),
  Constant nodes and weight DequantizeLinear (weights are stored quantized);
- metadata-only ops (Identity, Reshape, Squeeze, Unsqueeze, Flatten): no data moves;
- QuantizeLinear/DequantizeLinear inside the graph (they become the integer kernels' input and
  output types). A Q/DQ at the graph boundary (reading a graph input or writing a graph output) is
  a real conversion pass and runs as its own kernel. Where the graph costed is one a runtime has
  already optimized (GraphCosts.qdq_fused false: ONNX Runtime's), every Q/DQ left in it runs.

Kernels of several nodes (each one pass over its boundary tensors, one dispatch):
- attention (`Fusions.attention`): MatMul Q·Kᵀ (with its optional scale Mul/Div on Q and K) ->
  optional scale Mul/Div -> optional mask Add/Where -> Softmax (-> optional NaN guard) -> MatMul ·V;
- layernorm: the decomposed pattern ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div (or
  Reciprocal + Mul), Mul, Add as one normalization pass (native LayerNormalization is one node);
- gelu: the Erf-GELU and tanh-GELU elementwise patterns as one activation pass; swish
  (x * Sigmoid(x)) likewise;
- pad+conv: a Pad whose only consumer is a Conv or pooling node becomes that node's padding
  (ONNX Runtime's PadFusion; TensorRT pads inside the convolution);
- gemm+bias (`Fusions.matmul_bias`): MatMul followed by an Add of a weight (the bias);
- conv/gemm + activation (`Fusions.activations`): an activation or BatchNormalization whose only
  input comes from a conv/gemm kernel that feeds nothing else.
Nodes are fused only with nodes placed on the same unit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from edgekd.analysis.graph import GraphCosts, NodeCost

METADATA_ONLY = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten"})
FUSABLE = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "BatchNormalization"})
_POINTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Erf", "Tanh", "Sigmoid", "Cast"})
_SCALE = frozenset({"Mul", "Div"})
_MASK = frozenset({"Add", "Where", "Sub", "Mul", "Div"})
_NAN_GUARD = frozenset({"IsNaN", "Where", "Cast"})
_PADDED = frozenset({"Conv", "MaxPool", "AveragePool"})  # a constant Pad before them becomes their padding
KIND_CLASS = {"attention": "gemm", "gemm+bias": "gemm", "layernorm": "norm", "gelu": "activation",
              "swish": "activation"}
KIND_LABEL = {"attention": "Attention (fused)", "layernorm": "LayerNorm (fused)", "gelu": "Gelu (fused)",
              "swish": "Swish (fused)"}


@dataclass(frozen=True)
class Fusions:
    """Which multi-node fusions the runtime applies (the target's [device] flags)."""

    activations: bool = True
    matmul_bias: bool = True
    attention: bool = False
    patterns: bool = True  # pad+conv, layernorm, gelu/swish: off where the runtime's own graph is costed


@dataclass
class Kernel:
    """One executed kernel: its nodes (graph order; `anchor` carries the cost in per-node rows)."""

    anchor: NodeCost
    members: list[NodeCost]
    kind: str  # "node" for a single node, else the fusion's name
    inputs: list[str] = field(default_factory=list)  # tensors it reads (not weights), set by plan()
    outputs: list[str] = field(default_factory=list)  # tensors it writes for others (or as graph outputs)

    @property
    def op_class(self) -> str:
        if self.kind in KIND_CLASS:
            return KIND_CLASS[self.kind]
        return self.anchor.op_class

    @property
    def label(self) -> str:
        return KIND_LABEL.get(self.kind, self.anchor.op_type)


@dataclass
class Plan:
    kernels: list[Kernel]  # in graph order of their anchors
    free: dict[str, str]  # node name -> why it costs nothing
    fused_into: dict[str, str] = field(default_factory=dict)  # member name -> anchor name
    counts: dict[str, int] = field(default_factory=dict)  # kind -> kernels of that kind (multi-node only)


def free_nodes(costs: GraphCosts) -> dict[str, str]:
    """name -> why the node costs nothing at run time (see the module docstring)."""
    produced = {out for c in costs.nodes for out in c.outputs}
    consumed = {name for c in costs.nodes for name in c.inputs}
    free: dict[str, str] = {}
    for c in costs.nodes:
        if c.op_type == "DequantizeLinear" and c.folded and not c.inputs:
            free[c.name] = "weight dequantize: weights are stored quantized"
        elif c.folded:
            free[c.name] = "constant-folded: computed at build time from weights and static shapes"
        elif c.op_type in METADATA_ONLY:
            free[c.name] = "metadata only: no data moves"
        elif c.op_class in ("quant", "quant_axis") and costs.qdq_fused:
            boundary = any(i not in produced for i in c.inputs) or any(
                o not in consumed or o in costs.graph_outputs for o in c.outputs)
            if not boundary:
                free[c.name] = "Q/DQ inside the graph: folded into the integer kernels"
    return free


class _Walk:
    """Graph walks over the executed nodes, looking through free pass-through nodes (metadata-only
    ops, interior Q/DQ): every tensor is named by its `root`, the tensor it is a view of."""

    def __init__(self, costs: GraphCosts, free: dict[str, str], unit: Callable[[NodeCost], str]) -> None:
        self.alias: dict[str, str] = {}
        for c in costs.nodes:
            if c.name in free and c.inputs and not c.folded:
                for out in c.outputs:
                    self.alias[out] = c.inputs[0]
        self.producer: dict[str, NodeCost] = {}
        self.users: dict[str, list[NodeCost]] = {}
        self.executed = [c for c in costs.nodes if c.name not in free]
        for c in self.executed:
            for out in c.outputs:
                self.producer[self.root(out)] = c
            for t in dict.fromkeys(self.root(i) for i in c.inputs):
                self.users.setdefault(t, []).append(c)
        self.graph_outputs = {self.root(o) for o in costs.graph_outputs}
        self.taken: set[str] = set()
        self.unit = unit

    def root(self, tensor: str) -> str:
        seen = 0
        while tensor in self.alias and seen < 64:
            tensor, seen = self.alias[tensor], seen + 1
        return tensor

    def ins(self, c: NodeCost) -> list[str]:
        return [self.root(t) for t in c.inputs]

    def outs(self, c: NodeCost) -> list[str]:
        return [self.root(t) for t in c.outputs]

    def src(self, tensor: str) -> NodeCost | None:
        found = self.producer.get(self.root(tensor))
        return None if found is None or found.name in self.taken else found

    def only_user(self, tensor: str, node: NodeCost) -> bool:
        t = self.root(tensor)
        return t not in self.graph_outputs and [u.name for u in self.users.get(t, [])] == [node.name]

    def same_unit(self, nodes: Iterable[NodeCost]) -> bool:
        return len({self.unit(n) for n in nodes}) == 1

    def region(self, source: str, allowed: frozenset[str]) -> list[NodeCost]:
        """Every not-yet-fused node of an `allowed` op type computed from `source` (and weights)
        alone, through other such nodes: the pointwise cone of `source`."""
        have, members, queue = {source}, [], list(self.users.get(source, []))
        while queue:
            n = queue.pop(0)
            if n.name in self.taken or n in members or n.op_type not in allowed or not set(self.ins(n)) <= have:
                continue
            members.append(n)
            for out in self.outs(n):
                have.add(out)
                queue += self.users.get(out, [])
        return members


def _cone(w: _Walk, region: list[NodeCost], output: str) -> list[NodeCost] | None:
    """The members of `region` that `output` depends on, if none of their other outputs leaves them."""
    by_out = {o: n for n in region for o in w.outs(n)}
    keep, stack = [], [output]
    while stack:
        n = by_out.get(stack.pop())
        if n is not None and n not in keep:
            keep.append(n)
            stack += w.ins(n)
    inside = {n.name for n in keep}
    for n in keep:
        for o in w.outs(n):
            if o != output and (o in w.graph_outputs or any(u.name not in inside for u in w.users.get(o, []))):
                return None
    return keep


def _pointwise_kernel(w: _Walk, sources: Iterable[str], allowed: frozenset[str],
                      accept: Callable[[list[NodeCost]], bool]) -> list[NodeCost] | None:
    """The largest pointwise cone from one of `sources` to a single output that `accept` takes."""
    best: list[NodeCost] | None = None
    for source in sources:
        region = w.region(source, allowed)
        for n in region:
            for out in w.outs(n):
                cone = _cone(w, region, out)
                if cone and accept(cone) and w.same_unit(cone) and (best is None or len(cone) > len(best)):
                    best = cone
    return best


def _backward_sources(w: _Walk, start: NodeCost, depth: int = 6) -> list[str]:
    """Tensors that feed `start` through at most `depth` pointwise nodes (candidate GELU inputs)."""
    found, frontier = [], [start]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for t in w.ins(n):
                if t not in found:
                    found.append(t)
                src = w.src(t)
                if src is not None and src.op_type in _POINTWISE:
                    nxt.append(src)
        frontier = nxt
    return found


def _gelu(w: _Walk, node: NodeCost) -> tuple[str, list[NodeCost]] | None:
    if node.op_type in ("Erf", "Tanh"):
        def accept(cone: list[NodeCost]) -> bool:
            ops = [n.op_type for n in cone]
            return node in cone and len(cone) >= 4 and "Mul" in ops
        found = _pointwise_kernel(w, _backward_sources(w, node), _POINTWISE, accept)
        return ("gelu", found) if found else None
    if node.op_type == "Sigmoid" and node.inputs:
        x = w.ins(node)[0]
        gate = w.outs(node)[0]
        found = _pointwise_kernel(w, [x], frozenset({"Sigmoid", "Mul"}), lambda cone: node in cone and len(cone) == 2 and any(
            n.op_type == "Mul" and set(w.ins(n)) == {x, gate} for n in cone))
        return ("swish", found) if found else None
    return None


def _layernorm(w: _Walk, node: NodeCost) -> tuple[str, list[NodeCost]] | None:
    if node.op_type != "ReduceMean" or not node.inputs:
        return None

    def accept(cone: list[NodeCost]) -> bool:
        ops = [n.op_type for n in cone]
        return ops.count("ReduceMean") >= 2 and "Sqrt" in ops and node in cone

    found = _pointwise_kernel(w, [w.ins(node)[0]], _POINTWISE | {"ReduceMean"}, accept)
    return ("layernorm", found) if found else None


def _scores(w: _Walk, tensor: str, depth: int = 4) -> list[NodeCost] | None:
    """[MatMul Q·Kᵀ, scale/mask nodes...] that produce the Softmax input `tensor`."""
    src = w.src(tensor)
    if src is None:
        return None
    if src.op_type == "MatMul" and len(src.inputs) == 2:
        return [src]
    if depth and src.op_type in _MASK:
        for t in w.ins(src):
            below = _scores(w, t, depth - 1)
            if below is not None and w.only_user(below[-1].outputs[0], src):
                return below + [src]
    return None


def _attention(w: _Walk, node: NodeCost) -> tuple[str, list[NodeCost]] | None:
    if node.op_type != "Softmax" or not node.inputs:
        return None
    pre = _scores(w, w.ins(node)[0])
    if pre is None or not w.only_user(pre[-1].outputs[0], node):
        return None
    out = w.outs(node)[0]
    guard = _pointwise_kernel(w, [out], _NAN_GUARD, lambda cone: True) or []
    inside = {t for g in guard for t in w.ins(g)}
    last = next((o for g in guard for o in w.outs(g) if o not in inside), out)
    users = w.users.get(last, [])
    if len(users) != 1 or users[0].op_type != "MatMul" or w.ins(users[0])[0] != last or last in w.graph_outputs:
        return None
    if any(u not in guard and u is not users[0] for u in w.users.get(out, [])):
        return None
    scales = [s for t in w.ins(pre[0]) for s in [w.src(t)]
              if s is not None and s.op_type in _SCALE and len(s.inputs) == 1 and w.only_user(s.outputs[0], pre[0])]
    members = scales + pre + [node] + guard + [users[0]]
    return ("attention", members) if w.same_unit(members) else None


def _pad(w: _Walk, node: NodeCost) -> tuple[str, list[NodeCost]] | None:
    if node.op_type != "Pad" or len(node.inputs) != 1:
        return None
    users = w.users.get(w.outs(node)[0], [])
    if len(users) != 1 or users[0].op_type not in _PADDED or not w.only_user(node.outputs[0], users[0]):
        return None
    return ("pad+conv", [node, users[0]]) if w.same_unit([node, users[0]]) else None


def _bias(w: _Walk, node: NodeCost) -> tuple[str, list[NodeCost]] | None:
    if node.op_type != "Add" or len(node.inputs) != 1 or node.weight_elems == 0:
        return None
    src = w.src(node.inputs[0])
    if src is None or src.op_type != "MatMul" or not w.only_user(node.inputs[0], node) or not w.same_unit([src, node]):
        return None
    return "gemm+bias", [src, node]


def plan(costs: GraphCosts, fusions: Fusions, unit: Callable[[NodeCost], str]) -> Plan:
    """The kernels the runtime executes for `costs` (see the module docstring); `unit(node)` is
    where a node is placed ("accelerator" or "fallback")."""
    free = free_nodes(costs)
    w = _Walk(costs, free, unit)
    order = {c.name: i for i, c in enumerate(costs.nodes)}
    groups: list[tuple[str, list[NodeCost]]] = []
    matchers = (([_attention] if fusions.attention else []) + ([_pad, _layernorm, _gelu] if fusions.patterns else [])
                + ([_bias] if fusions.matmul_bias else []))
    for matcher in matchers:
        for c in w.executed:
            if c.name in w.taken:
                continue
            found = matcher(w, c)
            if found is not None:
                members = sorted(dict.fromkeys(found[1]), key=lambda n: order[n.name])
                w.taken.update(n.name for n in members)
                groups.append((found[0], members))
    kernels = [Kernel(_anchor(kind, members), members, kind) for kind, members in groups]
    kernels += [Kernel(c, [c], "node") for c in w.executed if c.name not in w.taken]
    kernels.sort(key=lambda k: order[k.anchor.name])
    if fusions.activations:
        kernels = _fuse_activations(w, kernels)
    result = Plan(kernels, free)
    for k in kernels:
        k.inputs, k.outputs = _boundary(w, k)
        if len(k.members) > 1:
            result.counts[k.kind] = result.counts.get(k.kind, 0) + 1
            result.fused_into.update({m.name: k.anchor.name for m in k.members if m is not k.anchor})
    return result


def _boundary(w: _Walk, k: Kernel) -> tuple[list[str], list[str]]:
    """The tensors a kernel reads from and writes for the rest of the graph (roots, each once)."""
    inside = {m.name for m in k.members}
    made = {o for m in k.members for o in w.outs(m)}
    reads = [t for t in dict.fromkeys(t for m in k.members for t in w.ins(m)) if t not in made]
    if len(k.members) == 1:
        return reads, list(dict.fromkeys(made))
    writes = [o for o in dict.fromkeys(o for m in k.members for o in w.outs(m))
              if o in w.graph_outputs or any(u.name not in inside for u in w.users.get(o, []))]
    return reads, writes


def _anchor(kind: str, members: list[NodeCost]) -> NodeCost:
    if kind in ("attention", "gemm+bias"):
        return next(m for m in members if m.op_type == "MatMul")
    if kind == "pad+conv":
        return members[-1]
    if kind in ("gelu", "swish"):
        return next(m for m in members if m.op_type in ("Erf", "Tanh", "Sigmoid"))
    return members[0]


def _fuse_activations(w: _Walk, kernels: list[Kernel]) -> list[Kernel]:
    """An activation/BatchNorm right after a conv/gemm kernel (its only consumer) joins it."""
    of_tensor: dict[str, Kernel] = {}
    kept: list[Kernel] = []
    for k in kernels:
        c = k.anchor
        if k.kind == "node" and c.op_type in FUSABLE and len(c.inputs) == 1:
            src = of_tensor.get(w.root(c.inputs[0]))
            if (src is not None and src.op_class in ("conv", "depthwise", "gemm") and src.kind != "attention"
                    and w.only_user(c.inputs[0], c) and w.same_unit([src.anchor, c])):
                src.members.append(c)
                if src.kind == "node":
                    src.kind = f"{src.anchor.op_type.lower()}+activation"
                for out in w.outs(c):
                    of_tensor[out] = src
                continue
        kept.append(k)
        for m in k.members:
            for out in w.outs(m):
                of_tensor[out] = k
    return kept
