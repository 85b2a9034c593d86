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
   the RotaryEmbedding's cos/sin caches, the sequence lengths from `attention_mask`) replaces them;
   what no longer feeds an output is removed.
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
from edgekd.graph.graph_edit import Graph, NotFusable, prune, save, verify
from edgekd.graph.sibling_matmul import pack_sibling_matmuls

MS = "com.microsoft"
SEQLENS = "edgekd_gqa_seqlens_k"
TOTAL = "edgekd_gqa_total_sequence_length"
PROJECTIONS = ("MatMul", "MatMulNBits")


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


def _kv_source(g: Graph, name: str, rotary: bool) -> tuple[Any, Any]:
    """(projection node, RotaryEmbedding or None) behind a present's new key/value."""
    rot = g.parent(name, "RotaryEmbedding") if rotary else None
    transposed = rot.input[0] if rot is not None else name
    reshape = g.parent(g.parent(transposed, "Transpose").input[0], "Reshape")
    return g.parent(reshape.input[0], PROJECTIONS), rot


def _attention_output(g: Graph, present_value: str) -> Any:
    """The Reshape after probabilities·V (its output is what the O projection reads)."""
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
                return reshape
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
    hidden = k_proj.input[0]
    queries = [n for n in g.consumers.get(hidden, []) if n.op_type in PROJECTIONS and n.name not in (k_proj.name, v_proj.name)]
    if len(queries) != 1 or v_proj.input[0] != hidden:
        raise NotFusable(f"the Q, K and V projections of '{key}' do not read one hidden state")
    rot = {a.name: helper.get_attribute_value(a) for a in rotary.attribute}
    if rot.get("rotary_embedding_dim", 0) not in (0, head_size):
        raise NotFusable(f"partial rotary ({rot['rotary_embedding_dim']} of {head_size}) at '{key}'")
    output = _attention_output(g, value)
    heads = (_weight_n(g, queries[0]) // head_size, _weight_n(g, k_proj) // head_size)
    qkv = _packed_qkv(g, queries[0], k_proj, v_proj, key)
    node = helper.make_node(
        "GroupQueryAttention",
        [*qkv, key_concat.input[0], value_concat.input[0], SEQLENS, TOTAL, rotary.input[2], rotary.input[3]],
        [output.output[0], key, value], name=f"edgekd_gqa_{key}", domain=MS,
        num_heads=heads[0], kv_num_heads=heads[1], do_rotary=1, rotary_interleaved=int(rot.get("interleaved", 0)))
    return node, [key_concat, value_concat, output], heads


def _packed_qkv(g: Graph, q: Any, k: Any, v: Any, key: str) -> list[str]:
    """GroupQueryAttention's query/key/value inputs: one MatMul with the three constant fp32 weights
    side by side (one kernel call instead of three: what onnxruntime-genai's builder writes), or the
    three projections' outputs as they are when their weights are not plain initializers."""
    from onnx import helper, numpy_helper

    weights = [g.inits.get(p.input[1]) for p in (q, k, v)]
    if any(p.op_type != "MatMul" for p in (q, k, v)) or any(w is None or len(w.dims) != 2 for w in weights):
        return [q.output[0], k.output[0], v.output[0]]
    packed = np.concatenate([numpy_helper.to_array(w) for w in weights], axis=1)
    name = f"edgekd_gqa_qkv_weight_{key}"
    g.graph.initializer.append(numpy_helper.from_array(packed, name))
    matmul = helper.make_node("MatMul", [q.input[0], name], [f"edgekd_gqa_qkv_{key}"], name=f"edgekd_gqa_qkv_{key}")
    g.graph.node.insert(list(g.graph.node).index(q), matmul)
    return [matmul.output[0], "", ""]


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


