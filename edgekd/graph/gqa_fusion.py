"""Fusing an exported KV-cache decoder's attention into ONNX Runtime's `com.microsoft.GroupQueryAttention`.

A Llama-family decoder exported by optimum-onnx (torch.onnx, SDPA) spends its decode step in the
small ops around attention, not in its weights: per layer the past Concat, repeat_kv's
Unsqueeze/Expand/Reshape, the causal mask's Slice/Where, Softmax's IsNaN/Where and the shape
arithmetic feeding them (measured on a SmolLM-shaped Llama, INT4: MatMulNBits was 27 % of the step).
onnxruntime-genai's builder writes one GroupQueryAttention node per layer instead; this module
rewrites the exported graph into the same form:

1. ONNX Runtime's transformers optimizer (`onnxruntime.transformers.optimizer`, the decoder fusion
   set it uses for Qwen3: RoPE, RMSNorm, no attention mask format) fuses RotaryEmbedding and
   (Skip)SimplifiedLayerNormalization.
2. Here, per layer, anchored on the graph outputs `present.N.key/value`: their Concat nodes' new
   keys/values lead back (RotaryEmbedding / Transpose / Reshape) to the K and V projections, the
   third projection of the same hidden state is Q, and the probabilities·V MatMul's Transpose +
   Reshape is the attention output the O projection reads. One GroupQueryAttention (do_rotary with
   the RotaryEmbedding's cos/sin caches, the sequence lengths from `attention_mask`, the scale the
   export multiplies Q·K^T by) replaces them; what no longer feeds an output is removed. Projections
   with a bias (Qwen2) keep it (packed beside the weights), a per-head RMSNorm of queries and keys
   before the rotary embedding (Qwen3's q_norm/k_norm) stays, reshaped back to what the node reads,
   and a scale other than 1/sqrt(head size) (Granite's attention_multiplier) is the node's `scale`.
3. MatMuls reading one hidden state (the MLP's gate and up) are packed into one MatMul + Split
   (edgekd.graph.sibling_matmul): one kernel call per decode step instead of two.

Nothing here is trusted: `verify` runs both graphs on a prompt and a decode step and the fused one
is used only when logits and presents agree (edgekd.backends.ort.decoder_tune). GroupQueryAttention
takes each row's length from the mask's sum (right-padded rows); batch-1 generation is what is checked.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.toolchain import require
from edgekd.graph.graph_edit import Graph, NotFusable, prune, save, scaled, verify
from edgekd.graph.sibling_matmul import pack_sibling_matmuls

MS = "com.microsoft"
SEQLENS = "edgekd_gqa_seqlens_k"
TOTAL = "edgekd_gqa_total_sequence_length"
PROJECTIONS = ("MatMul", "MatMulNBits")
NORM = "SimplifiedLayerNormalization"  # ORT's fused RMSNorm (the per-head q_norm/k_norm of Qwen3)


@dataclass(frozen=True)
class Fusion:
    """What `fuse_gqa` wrote: layers fused, heads, and the ORT fusions that preceded it."""

    layers: int
    num_heads: int
    kv_heads: int
    head_size: int
    ort_fusions: dict[str, int]
    packed: int = 0  # groups of sibling MatMuls packed into one (edgekd.graph.sibling_matmul: the MLP's gate and up)

    def describe(self) -> str:
        ort = ", ".join(f"{k} {v}" for k, v in self.ort_fusions.items() if v)
        return (f"attention of {self.layers} layers fused into com.microsoft.GroupQueryAttention ({self.num_heads} query heads, "
                f"{self.kv_heads} key/value heads, head size {self.head_size}, rotary inside; each row's length is the sum of its "
                f"attention_mask, so a padded batch must be right-padded); {self.packed} groups of sibling MatMuls (one input, "
                f"e.g. the MLP's gate and up) packed into one MatMul + Split; ORT transformers optimizer: {ort}")


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
    proj = g.parent(name, PROJECTIONS)
    return Projection(proj, None, proj.output[0])


def _query(g: Graph, proj: Any, normed: bool) -> Projection:
    """The Q projection `proj` with its bias where its product's only reader adds one, and, where the
    keys are `normed`, the per-head norm its Reshape feeds."""
    readers = g.consumers.get(proj.output[0], [])
    bias = _bias(g, readers[0], proj.output[0]) if len(readers) == 1 else None
    output = readers[0].output[0] if bias else proj.output[0]
    if not normed:
        return Projection(proj, bias, output)
    reshape = g.consumers.get(output, [None])[0]
    norm = reshape is not None and reshape.op_type == "Reshape" and g.consumers.get(reshape.output[0], [None])[0]
    if not norm or norm.op_type != NORM:
        raise NotFusable(f"the keys of {proj.name}'s layer are normalized per head but its queries are not")
    return Projection(proj, bias, output, norm)


def _kv_source(g: Graph, name: str, rotary: bool) -> tuple[Projection, Any]:
    """(projection, RotaryEmbedding or None) behind a present's new key/value: Transpose of the
    projection's per-head Reshape, or of a per-head norm of it."""
    rot = g.parent(name, "RotaryEmbedding") if rotary else None
    transposed = rot.input[0] if rot is not None else name
    heads = g.parent(transposed, "Transpose").input[0]
    norm = g.producer.get(heads) if g.producer.get(heads) is not None and g.producer[heads].op_type == NORM else None
    reshape = g.parent(norm.input[0] if norm is not None else heads, "Reshape")
    proj = _projection(g, reshape.input[0])
    return Projection(proj.node, proj.bias, proj.output, norm), rot


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


def _attention_scale(g: Graph, probs_v: Any) -> float | None:
    """The factor the exported attention multiplies Q·K^T by: one-element constants multiplying or
    dividing Q, K^T or their product (torch's SDPA export multiplies Q and K^T by sqrt(scale) each;
    Granite's scale is its attention_multiplier, not 1/sqrt(head size)), found from the
    probabilities·V MatMul back through Where/Softmax/Cast and the mask's Add; None where the scores
    are made otherwise (then GroupQueryAttention's default, and `verify` judges)."""
    name = probs_v.input[0]
    node = g.producer.get(name)
    while node is not None and node.op_type in ("Where", "Softmax", "Cast", "Add"):
        if node.op_type == "Add":  # scores + mask: the scores side is the one a MatMul (perhaps scaled) makes
            sides = [scaled(g, i)[0] for i in node.input]
            made = [g.producer.get(i) is not None and g.producer[i].op_type == "MatMul" for i in sides]
            name = node.input[made.index(True)] if made.count(True) == 1 else None
        else:
            name = node.input[2] if node.op_type == "Where" else node.input[0]
        node = g.producer.get(name) if name else None
    if name is None:
        return None
    scores, factor = scaled(g, name)
    matmul = g.producer.get(scores)
    if matmul is None or matmul.op_type != "MatMul":
        return None
    return factor * scaled(g, matmul.input[0])[1] * scaled(g, matmul.input[1])[1]


def _attention_output(g: Graph, present_value: str) -> tuple[Any, Any]:
    """(the probabilities·V MatMul, the Reshape after it: its output is what the O projection reads)."""
    seen, frontier = set(), [present_value]
    while frontier:
        name = frontier.pop()
        for node in g.consumers.get(name, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "MatMul":
                transpose = next((c for c in g.consumers.get(node.output[0], []) if c.op_type == "Transpose"), None)
                reshape = transpose and next((c for c in g.consumers.get(transpose.output[0], []) if c.op_type == "Reshape"), None)
                if reshape is None:
                    raise NotFusable(f"{node.name} (probabilities·V) is not followed by Transpose + Reshape")
                return node, reshape
            if node.op_type in ("Unsqueeze", "Expand", "Reshape", "Identity"):
                frontier.extend(node.output)
    raise NotFusable(f"no probabilities·V MatMul reads '{present_value}'")


def _mask_lengths(graph: Any, mask: str, opset: int) -> None:
    """Prepend the nodes GroupQueryAttention's lengths come from: seqlens_k = sum(mask) - 1 (int32,
    per row) and total_sequence_length = mask.shape[1] (int32 scalar)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, f"edgekd_gqa_{name}"))
        return f"edgekd_gqa_{name}"

    one, axis = const("one", np.array(1, np.int64)), const("axis", np.array([1], np.int64))
    if opset >= 13:
        total_mask = helper.make_node("ReduceSum", [mask, axis], ["edgekd_gqa_mask_sum"], keepdims=0)
    else:
        total_mask = helper.make_node("ReduceSum", [mask], ["edgekd_gqa_mask_sum"], axes=[1], keepdims=0)
    nodes = [
        helper.make_node("Cast", [mask], ["edgekd_gqa_mask64"], to=TensorProto.INT64),
        total_mask,
        helper.make_node("Sub", ["edgekd_gqa_mask_sum", one], ["edgekd_gqa_seqlens64"]),
        helper.make_node("Cast", ["edgekd_gqa_seqlens64"], [SEQLENS], to=TensorProto.INT32),
        helper.make_node("Shape", [mask], ["edgekd_gqa_mask_shape"]),
        helper.make_node("Gather", ["edgekd_gqa_mask_shape", one], ["edgekd_gqa_total64"], axis=0),
        helper.make_node("Cast", ["edgekd_gqa_total64"], [TOTAL], to=TensorProto.INT32),
    ]
    total_mask.input[0] = "edgekd_gqa_mask64"
    for i, node in enumerate(nodes):
        node.name = f"edgekd_gqa_lengths_{i}"
        graph.node.insert(i, node)


def _layer_node(g: Graph, key: str, value: str, head_size: int) -> tuple[Any, list[Any], tuple[int, int]]:
    """(GroupQueryAttention node, the nodes it replaces, (query heads, key/value heads)) for one layer."""
    from onnx import helper

    key_concat, value_concat = g.parent(key, "Concat"), g.parent(value, "Concat")
    k_proj, rotary = _kv_source(g, key_concat.input[1], rotary=True)
    v_proj, _ = _kv_source(g, value_concat.input[1], rotary=False)
    hidden = k_proj.node.input[0]
    queries = [n for n in g.consumers.get(hidden, []) if n.op_type in PROJECTIONS and n.name not in (k_proj.node.name, v_proj.node.name)]
    if len(queries) != 1 or v_proj.node.input[0] != hidden:
        raise NotFusable(f"the Q, K and V projections of '{key}' do not read one hidden state")
    rot = {a.name: helper.get_attribute_value(a) for a in rotary.attribute}
    if rot.get("rotary_embedding_dim", 0) not in (0, head_size):
        raise NotFusable(f"partial rotary ({rot['rotary_embedding_dim']} of {head_size}) at '{key}'")
    probs_v, output = _attention_output(g, value)
    scale = _attention_scale(g, probs_v)
    heads = (_weight_n(g, queries[0]) // head_size, _weight_n(g, k_proj.node) // head_size)
    qkv = _packed_qkv(g, (_query(g, queries[0], k_proj.norm is not None), k_proj, v_proj), key)
    node = helper.make_node(
        "GroupQueryAttention",
        [*qkv, key_concat.input[0], value_concat.input[0], SEQLENS, TOTAL, rotary.input[2], rotary.input[3]],
        [output.output[0], key, value], name=f"edgekd_gqa_{key}", domain=MS,
        num_heads=heads[0], kv_num_heads=heads[1], do_rotary=1, rotary_interleaved=int(rot.get("interleaved", 0)),
        **({} if scale is None else {"scale": scale}))
    return node, [key_concat, value_concat, output], heads


def _packed_qkv(g: Graph, projections: tuple[Projection, Projection, Projection], key: str) -> list[str]:
    """GroupQueryAttention's query/key/value inputs: one MatMul with the three constant fp32 weights
    side by side (one kernel call instead of three: what onnxruntime-genai's builder writes), plus one
    Add of the three biases side by side where any has one (zeros for one without), or the three
    projections' outputs as they are when their weights are not plain initializers."""
    from onnx import helper, numpy_helper

    weights = [g.inits.get(p.node.input[1]) for p in projections]
    if any(p.node.op_type != "MatMul" or p.norm is not None for p in projections) or any(w is None or len(w.dims) != 2 for w in weights):
        return [_flat(g, p, f"{tag}_{key}") for p, tag in zip(projections, ("query", "key", "value"))]
    arrays = [numpy_helper.to_array(w) for w in weights]
    name, q = f"edgekd_gqa_qkv_{key}", projections[0].node
    g.graph.initializer.append(numpy_helper.from_array(np.concatenate(arrays, axis=1), f"{name}_weight"))
    nodes = [helper.make_node("MatMul", [q.input[0], f"{name}_weight"], [name], name=name)]
    if any(p.bias for p in projections):
        biases = [numpy_helper.to_array(g.inits[p.bias]) if p.bias else np.zeros(a.shape[1], a.dtype) for p, a in zip(projections, arrays)]
        g.graph.initializer.append(numpy_helper.from_array(np.concatenate(biases), f"{name}_bias"))
        nodes.append(helper.make_node("Add", [name, f"{name}_bias"], [f"{name}_biased"], name=f"{name}_bias"))
    position = list(g.graph.node).index(q)
    for offset, node in enumerate(nodes):
        g.graph.node.insert(position + offset, node)
    return [nodes[-1].output[0], "", ""]


def _ort_fusions(source: Path) -> tuple[Any, dict[str, int]]:
    from edgekd.graph.transformer import optimizer_on_path, quiet_optimizer

    require("onnxruntime", "decoder attention fusion")
    optimizer_on_path()
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    with quiet_optimizer(), contextlib.redirect_stdout(io.StringIO()):
        optimized = optimizer.optimize_model(str(source), model_type="qwen3", num_heads=0, hidden_size=0, opt_level=0,
                                             optimization_options=FusionOptions("qwen3"), use_gpu=False)
    return optimized.model, dict(optimized.get_fused_operator_statistics())


def fuse_gqa(source: Path, out: Path) -> Fusion:
    """Write `source` (a KV-cache decoder, fp32 weights) with every layer's attention as one
    GroupQueryAttention to `out`; raises NotFusable (nothing written) when its graph is not that form."""
    from onnx import helper

    from edgekd.graph.decoder import PAST_PREFIX, PRESENT_PREFIX

    model, ort = _ort_fusions(source)
    graph = model.graph
    if "attention_mask" not in {i.name for i in graph.input}:
        raise NotFusable("no 'attention_mask' input to take sequence lengths from")
    presents = sorted((o.name for o in graph.output if o.name.startswith(PRESENT_PREFIX) and o.name.endswith(".key")),
                      key=lambda n: int(n.split(".")[1]) if n.split(".")[1].isdigit() else n)
    pasts = {i.name: i for i in graph.input if i.name.startswith(PAST_PREFIX)}
    if not presents or not ort.get("RotaryEmbedding"):
        raise NotFusable("no present key outputs with rotary embeddings (ORT fused no RotaryEmbedding)")
    dims = pasts[presents[0].replace(PRESENT_PREFIX, PAST_PREFIX, 1)].type.tensor_type.shape.dim
    head_size = dims[-1].dim_value
    if head_size % 16:
        raise NotFusable(f"head size {head_size} is not a multiple of 16 (ONNX Runtime's GroupQueryAttention needs one)")
    g = Graph(graph)
    fused, heads = [], set()
    for key in presents:
        node, replaced, layer_heads = _layer_node(g, key, key[: -len("key")] + "value", head_size)
        fused.append((node, replaced))
        heads.add(layer_heads)
    if len(heads) != 1:
        raise NotFusable(f"layers disagree on their head counts {sorted(heads)}")
    for node, replaced in fused:
        index = list(graph.node).index(replaced[-1])
        graph.node.insert(index, node)
        for old in replaced:
            graph.node.remove(old)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 14)
    _mask_lengths(graph, "attention_mask", opset)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    prune(graph)  # the replaced projections go first: they read the hidden state the packed QKV MatMul reads
    packed = pack_sibling_matmuls(graph) if opset >= 13 else 0
    prune(graph)
    save(model, out)
    (num_heads, kv_heads), = heads
    return Fusion(len(presents), num_heads, kv_heads, head_size, ort, packed)


