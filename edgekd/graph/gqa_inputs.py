"""Where GroupQueryAttention's inputs come from in an exported decoder layer (edgekd.graph.gqa_fusion):
the Q, K and V projections behind a layer's present key/value, and the query/key/value inputs the
node reads.

A projection is a MatMul (or MatMulNBits), perhaps plus a constant bias (Qwen2, Phi-2, OPT), perhaps one
Slice of a packed QKV MatMul (Phi-3's qkv_proj) or one output of its Split along the last axis
(GPT-2's c_attn), or packed per head, each head's q, k and v side by side and sliced after the heads
are split (GPT-NeoX's query_key_value: its columns are reordered into one Q, K, V packing); the queries
may be multiplied by a constant before they are split into heads (OPT's scaling: the node's scale takes it). Between it and the rotary embedding there may be a
per-head RMSNorm (Qwen3's q_norm/k_norm); the rotary embedding may rotate the whole head or only its
first dimensions, the rest concatenated back unrotated (Phi-2, StableLM: partial; Phi-3: the same
form with nothing left over). What the node reads: one packed QKV MatMul (and bias Add) where the
three weights are plain fp32 initializers or already one packed MatMul, else the three projections'
outputs (normed ones reshaped back to [batch, sequence, heads x head size]).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgekd.graph.graph_edit import Graph, NotFusable, constant, scaled

PROJECTIONS = ("MatMul", "MatMulNBits")
NORM = "SimplifiedLayerNormalization"  # ORT's fused RMSNorm (the per-head q_norm/k_norm of Qwen3)


def _weight_n(g: Graph, proj: Any) -> int:
    from onnx import helper

    if proj.op_type == "MatMulNBits":
        return int(next(helper.get_attribute_value(a) for a in proj.attribute if a.name == "N"))
    init = g.inits.get(proj.input[1])
    if init is None:
        raise NotFusable(f"projection {proj.name} has no constant weight")
    return int(init.dims[-1])


@dataclass(frozen=True)
class Projection:
    """A Q, K or V projection: its MatMul (or MatMulNBits) node, and the constant bias added to its
    product (Qwen2's q/k/v_proj have one), if any: `output` is what attention reads."""

    node: Any
    bias: str | None = None
    output: str = ""
    norm: Any = None  # a per-head RMSNorm between the projection and the rotary embedding (Qwen3's q_norm/k_norm)
    packed: bool = False  # `output` is a Slice or Split output of a packed QKV MatMul's product (Phi-3, GPT-2)
    interleaved: bool = False  # packed per head: each head's q, k, v side by side (GPT-NeoX's query_key_value)
    factor: float = 1.0  # the constant the queries are multiplied by before attention reads them (OPT's scaling)


def _bias(g: Graph, add: Any, product: str) -> str | None:
    """The constant 1-D bias `add` adds to `product`, or None where `add` is not such an Add."""
    if add.op_type != "Add" or product not in add.input:
        return None
    other = add.input[1] if add.input[0] == product else add.input[0]
    node = g.producer.get(other)
    while node is not None and node.op_type == "Identity":  # torch.onnx shares equal constants through Identity
        other, node = node.input[0], g.producer.get(node.input[0])
    return other if other in g.inits and len(g.inits[other].dims) == 1 else None


def _projection(g: Graph, name: str) -> Projection:
    """The projection making `name`: a MatMul/MatMulNBits, or one plus a constant bias."""
    node = g.producer.get(name)
    source = node and next((i for i in node.input if g.producer.get(i) is not None and g.producer[i].op_type in PROJECTIONS), None)
    if node is not None and node.op_type == "Add" and source is not None and _bias(g, node, source) is not None:
        return Projection(g.producer[source], _bias(g, node, source), name)
    if node is not None and node.op_type in ("Slice", "Split") and g.producer.get(node.input[0]) is not None:
        whole = _projection(g, node.input[0]) if g.producer[node.input[0]].op_type in (*PROJECTIONS, "Add") else None
        if whole is not None and (node.op_type == "Slice" or _last_axis(node)):
            return Projection(whole.node, whole.bias, whole.output, packed=True)
    proj = g.parent(name, PROJECTIONS)
    return Projection(proj, None, proj.output[0])


def _last_axis(split: Any) -> bool:
    """Whether `split` splits along the last axis of its rank-3 input (GPT-2's c_attn product)."""
    from onnx import helper

    axis = next((helper.get_attribute_value(a) for a in split.attribute if a.name == "axis"), 0)
    return axis in (-1, 2)


def _query(g: Graph, proj: Any, normed: bool) -> Projection:
    """The Q projection `proj` with its bias where its product's only reader adds one, the constant
    factor where the only reader of that multiplies it by one (OPT), and, where the keys are
    `normed`, the per-head norm its Reshape feeds."""
    readers = g.consumers.get(proj.output[0], [])
    bias = _bias(g, readers[0], proj.output[0]) if len(readers) == 1 else None
    output = readers[0].output[0] if bias else proj.output[0]
    readers = g.consumers.get(output, [])
    if not normed and len(readers) == 1 and readers[0].op_type in ("Mul", "Div"):
        unscaled, factor = scaled(g, readers[0].output[0])
        if unscaled == output and factor != 1.0:
            return Projection(proj, bias, output, factor=factor)  # OPT scales its queries before the heads: the node's scale
    if not normed:
        return Projection(proj, bias, output)
    reshape = g.consumers.get(output, [None])[0]
    norm = reshape is not None and reshape.op_type == "Reshape" and g.consumers.get(reshape.output[0], [None])[0]
    if not norm or norm.op_type != NORM:
        raise NotFusable(f"the keys of {proj.name}'s layer are normalized per head but its queries are not")
    return Projection(proj, bias, output, norm)


def _rotary(g: Graph, name: str) -> tuple[Any, str]:
    """(the RotaryEmbedding making `name`, the tensor whose heads it rotates): directly, or as the
    Concat of the rotated first dimensions and the unrotated rest, both Slices of one tensor along its
    last axis, the first from 0 (ONNX Runtime's optimizer fuses only the rotated part)."""
    node = g.producer.get(name)
    if node is not None and node.op_type == "Concat" and len(node.input) == 2:
        rot, rest = (g.producer.get(i) for i in node.input)
        part = rot is not None and rot.op_type == "RotaryEmbedding" and g.producer.get(rot.input[0])
        if part and rest is not None and part.op_type == rest.op_type == "Slice" and part.input[0] == rest.input[0]:
            start, axes = constant(g, part.input[1]), [constant(g, s.input[3]) if len(s.input) > 3 else None for s in (part, rest)]
            if start is not None and not start.any() and all(a is not None and int(a.reshape(-1)[0]) in (-1, 3) for a in axes):
                return rot, part.input[0]  # where the rest starts is not read here: `verify` compares every output
    rot = g.parent(name, "RotaryEmbedding")
    return rot, rot.input[0]


def _interleaved(g: Graph, name: str) -> Projection | None:
    """GPT-NeoX's form: `name` is a Slice along the last axis of Transpose(Reshape(projection)), the
    projection's heads each holding their q, k and v side by side; None where it is not."""
    part = g.producer.get(name)
    axes = constant(g, part.input[3]) if part is not None and part.op_type == "Slice" and len(part.input) > 3 else None
    if axes is None or int(axes.reshape(-1)[0]) not in (-1, 3):
        return None
    transpose = g.producer.get(part.input[0])
    reshape = g.producer.get(transpose.input[0]) if transpose is not None and transpose.op_type == "Transpose" else None
    if reshape is None or reshape.op_type != "Reshape":
        return None
    return replace(_projection(g, reshape.input[0]), packed=True, interleaved=True)


def kv_source(g: Graph, name: str, rotary: bool) -> tuple[Projection, Any]:
    """(projection, RotaryEmbedding or None) behind a present's new key/value: Transpose of the
    projection's per-head Reshape, or of a per-head norm of it, or a Slice of a per-head packed one."""
    rot, transposed = _rotary(g, name) if rotary else (None, name)
    interleaved = _interleaved(g, transposed)
    if interleaved is not None:
        return interleaved, rot
    heads = g.parent(transposed, "Transpose").input[0]
    norm = g.producer.get(heads) if g.producer.get(heads) is not None and g.producer[heads].op_type == NORM else None
    reshape = g.parent(norm.input[0] if norm is not None else heads, "Reshape")
    return replace(_projection(g, reshape.input[0]), norm=norm), rot


def _flat(g: Graph, proj: Projection, tag: str) -> str:
    """What GroupQueryAttention reads for `proj`: its output, or its per-head norm's output
    reshaped back to [batch, sequence, heads x head size] (a Reshape inserted after the norm)."""
    from onnx import helper, numpy_helper

    def const(dims: list[int]) -> str:
        name = "edgekd_gqa_shape_" + "_".join(str(d).replace("-", "m") for d in dims)
        if name not in g.inits:
            g.inits[name] = numpy_helper.from_array(np.array(dims, np.int64), name)
            g.graph.initializer.append(g.inits[name])
        return name

    if proj.norm is None:
        return proj.output
    weight = g.inits.get(proj.norm.input[1])
    if weight is not None and len(weight.dims) == 1:  # the per-head Reshape's shape as a constant: its shape arithmetic goes
        g.producer[proj.norm.input[0]].input[1] = const([0, 0, -1, int(weight.dims[0])])
    node = helper.make_node("Reshape", [proj.norm.output[0], const([0, 0, -1])], [f"edgekd_gqa_{tag}"], name=f"edgekd_gqa_{tag}")
    g.graph.node.insert(list(g.graph.node).index(proj.norm) + 1, node)
    return node.output[0]


def _packed_qkv(g: Graph, projections: tuple[Projection, Projection, Projection], key: str) -> list[str]:
    """GroupQueryAttention's query/key/value inputs: one MatMul with the three constant fp32 weights
    side by side (one kernel call instead of three: what onnxruntime-genai's builder writes), plus one
    Add of the three biases side by side where any has one (zeros for one without), or the three
    projections' outputs as they are when their weights are not plain initializers."""
    from onnx import numpy_helper

    weights = [g.inits.get(p.node.input[1]) for p in projections]
    if any(p.node.op_type != "MatMul" or p.norm is not None for p in projections) or any(w is None or len(w.dims) != 2 for w in weights):
        return [_flat(g, p, f"{tag}_{key}") for p, tag in zip(projections, ("query", "key", "value"))]
    arrays = [numpy_helper.to_array(w) for w in weights]
    biases = [numpy_helper.to_array(g.inits[p.bias]) if p.bias else np.zeros(a.shape[1], a.dtype) for p, a in zip(projections, arrays)]
    bias = np.concatenate(biases) if any(p.bias for p in projections) else None
    return [_packed_matmul(g, projections[0].node, np.concatenate(arrays, axis=1), bias, key), "", ""]


def _packed_matmul(g: Graph, anchor: Any, weight: np.ndarray, bias: np.ndarray | None, key: str) -> str:
    """A MatMul of `anchor`'s input by `weight` (+ an Add of `bias`), inserted before `anchor`: the
    packed QKV input of `key`'s GroupQueryAttention; returns its output's name."""
    from onnx import helper, numpy_helper

    name = f"edgekd_gqa_qkv_{key}"
    g.graph.initializer.append(numpy_helper.from_array(weight, f"{name}_weight"))
    nodes = [helper.make_node("MatMul", [anchor.input[0], f"{name}_weight"], [name], name=name)]
    if bias is not None:
        g.graph.initializer.append(numpy_helper.from_array(bias, f"{name}_bias"))
        nodes.append(helper.make_node("Add", [name, f"{name}_bias"], [f"{name}_biased"], name=f"{name}_bias"))
    position = list(g.graph.node).index(anchor)
    for offset, node in enumerate(nodes):
        g.graph.node.insert(position + offset, node)
    return nodes[-1].output[0]


def _deinterleaved(g: Graph, proj: Projection, head_size: int, key: str) -> str:
    """A copy of the per-head packed projection `proj` (each head's q, k, v side by side) with its weight
    columns and bias reordered to all queries, then all keys, then all values: the packed input
    GroupQueryAttention reads (an exact permutation, written as a new MatMul (+ Add))."""
    from onnx import numpy_helper

    weight = g.inits.get(proj.node.input[1])
    if weight is None or len(weight.dims) != 2 or weight.dims[1] % (3 * head_size):
        raise NotFusable(f"the per-head packed QKV projection {proj.node.name} of '{key}' has no [hidden, heads x 3 x head size] weight")
    heads = weight.dims[1] // (3 * head_size)
    order = np.arange(weight.dims[1]).reshape(heads, 3, head_size).transpose(1, 0, 2).reshape(-1)
    bias = numpy_helper.to_array(g.inits[proj.bias])[order] if proj.bias else None
    return _packed_matmul(g, proj.node, numpy_helper.to_array(weight)[:, order], bias, key)


def qkv_inputs(g: Graph, k_proj: Projection, v_proj: Projection, key: str, head_size: int, kv_heads: int) -> tuple[list[str], tuple[int, int], float]:
    """(GroupQueryAttention's query, key and value inputs, (query heads, key/value heads), the factor
    the queries are multiplied by before attention) for the layer whose key and value projections are
    `k_proj` and `v_proj`: the Q projection is the third projection of their hidden state, or the
    third Slice (Split output) of their packed QKV MatMul."""
    if k_proj.packed and v_proj.packed and k_proj.node is v_proj.node:  # one MatMul's product sliced in Q, K, V order
        if k_proj.norm is not None or k_proj.node.op_type != "MatMul":
            raise NotFusable(f"the packed QKV projection {k_proj.node.name} of '{key}' is normalized per head or quantized")
        heads = (_weight_n(g, k_proj.node) // head_size - 2 * kv_heads, kv_heads)
        return [_deinterleaved(g, k_proj, head_size, key) if k_proj.interleaved else k_proj.output, "", ""], heads, 1.0
    hidden = k_proj.node.input[0]
    queries = [n for n in g.consumers.get(hidden, []) if n.op_type in PROJECTIONS and n.name not in (k_proj.node.name, v_proj.node.name)]
    if len(queries) > 1:  # the hidden state feeds the MLP too (Phi-2's parallel block): Q is the one split into heads
        queries = [n for n in queries if any(r.op_type == "Reshape" for r in g.consumers.get(_query(g, n, False).output, []))]
    if len(queries) != 1 or v_proj.node.input[0] != hidden or k_proj.packed or v_proj.packed:
        raise NotFusable(f"the Q, K and V projections of '{key}' do not read one hidden state")
    heads = (_weight_n(g, queries[0]) // head_size, _weight_n(g, k_proj.node) // head_size)
    query = _query(g, queries[0], k_proj.norm is not None)
    return _packed_qkv(g, (query, k_proj, v_proj), key), heads, query.factor

