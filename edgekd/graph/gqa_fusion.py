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
   the RotaryEmbedding's cos/sin caches, cut to the model's declared positions where they are given;
   without rotary where the graph has none, GPT-2 and OPT; the sequence lengths from `attention_mask`,
   the scale the export multiplies Q·K^T by, where it is a constant) replaces them; what no longer
   feeds an output is removed. The projections' forms (biases, a packed QKV MatMul, sliced, split or
   packed per head, per-head q/k norms, partial rotary) are edgekd.graph.gqa_inputs'; a scale other
   than 1/sqrt(head size) (Granite's attention_multiplier, OPT's query scaling) is the node's `scale`.
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
from edgekd.graph.gqa_inputs import kv_source, qkv_inputs
from edgekd.graph.sibling_matmul import pack_sibling_matmuls

MS = "com.microsoft"
SEQLENS = "edgekd_gqa_seqlens_k"
TOTAL = "edgekd_gqa_total_sequence_length"


@dataclass(frozen=True)
class Fusion:
    """What `fuse_gqa` wrote: layers fused, heads, and the ORT fusions that preceded it."""

    layers: int
    num_heads: int
    kv_heads: int
    head_size: int
    ort_fusions: dict[str, int]
    packed: int = 0  # groups of sibling MatMuls packed into one (edgekd.graph.sibling_matmul: the MLP's gate and up)
    rotary: bool = True  # the node rotates the queries and keys (False: GPT-2, OPT embed positions before the layers)
    cache_rows: int = 0  # positions the rotary caches were cut to (0: not cut)

    def describe(self) -> str:
        ort = ", ".join(f"{k} {v}" for k, v in self.ort_fusions.items() if v)
        return (f"attention of {self.layers} layers fused into com.microsoft.GroupQueryAttention ({self.num_heads} query heads, "
                f"{self.kv_heads} key/value heads, head size {self.head_size}, {'rotary inside' if self.rotary else 'no rotary'}; each row's length is the sum of its "
                f"attention_mask, so a padded batch must be right-padded); {self.packed} groups of sibling MatMuls (one input, "
                f"e.g. the MLP's gate and up) packed into one MatMul + Split; ORT transformers optimizer: {ort}"
                + (f"; rotary caches cut to the model's {self.cache_rows} positions (a longer sequence is refused by "
                   "ONNX Runtime)" if self.cache_rows else ""))


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
    (q, q_factor), (k, k_factor) = scaled(g, matmul.input[0]), scaled(g, matmul.input[1])
    if any(g.producer.get(x) is not None and g.producer[x].op_type in ("Mul", "Div") for x in (q, k)):
        return None  # scaled by something computed (StableLM's export: Sqrt of shape arithmetic): not read here
    return factor * q_factor * k_factor


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


def _rotary_caches(g: Graph, rotary: Any, key: str, head_size: int) -> tuple[list[str], int]:
    """(the cos and sin caches GroupQueryAttention rotates with, interleaved) of a layer's fused
    RotaryEmbedding; NotFusable where the node cannot take them."""
    from onnx import helper

    rot = {a.name: helper.get_attribute_value(a) for a in rotary.attribute}
    if rot.get("rotary_embedding_dim", 0) not in (0, head_size):
        raise NotFusable(f"partial rotary ({rot['rotary_embedding_dim']} of {head_size}) at '{key}'")
    cos = g.inits.get(rotary.input[2])
    if cos is None or len(cos.dims) != 2 or cos.dims[1] % 8 or 2 * cos.dims[1] > head_size:  # ONNX Runtime 1.32's check, said before
        half = "not a constant" if cos is None or len(cos.dims) != 2 else f"{cos.dims[1]} wide"
        raise NotFusable(f"the rotary cos cache of '{key}' is {half}: GroupQueryAttention needs one of head size / 2 or less, "
                         "a multiple of 8 wide (a rotary dimension that is a multiple of 16)")
    return [rotary.input[2], rotary.input[3]], int(rot.get("interleaved", 0))


def _layer_node(g: Graph, key: str, head_size: int, kv_heads: int, rotary: bool) -> tuple[Any, list[Any], tuple[int, int]]:
    """(GroupQueryAttention node, the nodes it replaces, (query heads, key/value heads)) for one
    layer; its keys rotated by a fused RotaryEmbedding where `rotary`, else (GPT-2, OPT: positions
    are embedded before the layers) taken from the projection as they are."""
    from onnx import helper

    value = key[: -len("key")] + "value"
    key_concat, value_concat = g.parent(key, "Concat"), g.parent(value, "Concat")
    try:
        k_proj, rotary_node = kv_source(g, key_concat.input[1], rotary=rotary)
    except NotFusable as exc:
        if rotary:
            raise
        raise NotFusable(f"the new keys of '{key}' are not their projection split into heads ({exc}): a rotary embedding "
                         "ONNX Runtime's optimizer did not fuse, or another form") from exc
    v_proj, _ = kv_source(g, value_concat.input[1], rotary=False)
    caches, interleaved = _rotary_caches(g, rotary_node, key, head_size) if rotary else ([], 0)
    probs_v, output = _attention_output(g, value)
    scale = _attention_scale(g, probs_v)
    qkv, heads, factor = qkv_inputs(g, k_proj, v_proj, key, head_size, kv_heads)
    if factor != 1.0:  # the queries scaled before attention (OPT): GroupQueryAttention reads them unscaled
        scale = factor * (head_size ** -0.5 if scale is None else scale)
    node = helper.make_node(
        "GroupQueryAttention", [*qkv, key_concat.input[0], value_concat.input[0], SEQLENS, TOTAL, *caches],
        [output.output[0], key, value], name=f"edgekd_gqa_{key}", domain=MS,
        num_heads=heads[0], kv_num_heads=heads[1], do_rotary=int(rotary), rotary_interleaved=interleaved,
        **({} if scale is None else {"scale": scale}))
    return node, [key_concat, value_concat, output], heads


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


def _cut_caches(g: Graph, nodes: list[Any], positions: int) -> int:
    """Cut the rotary cos/sin caches `nodes` read to their first `positions` rows (ONNX Runtime's
    optimizer writes 131072: 2 x 16.8 MB at head size 64); returns the rows they have after."""
    from onnx import numpy_helper

    rows = 0
    for name in {n.input[i] for n in nodes for i in (7, 8) if len(n.input) > i}:
        table = numpy_helper.to_array(g.inits[name])
        if table.shape[0] > positions:
            g.inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(table[:positions]), name))
        rows = int(min(table.shape[0], positions))
    return rows


def _alibi(config: Any) -> bool:
    """Whether the model's transformers config says its attention adds ALiBi's per-head linear bias."""
    attn = getattr(config, "attn_config", None)  # MPT keeps it there
    return bool(getattr(config, "alibi", False) or getattr(attn, "alibi", False)
                or (isinstance(attn, dict) and attn.get("alibi")) or getattr(config, "model_type", None) == "bloom")


def _rotates(config: Any) -> bool:
    """Whether the model's transformers config says it rotates queries and keys (a rotary embedding)."""
    return any(getattr(config, k, None) for k in ("rope_theta", "rotary_dim", "rotary_pct", "partial_rotary_factor"))


def _config_refusal(config: Any, ort_rotary: bool) -> str | None:
    """Why this model's attention cannot become GroupQueryAttention, read from its transformers config
    (`config`; None: not known) and whether ONNX Runtime's optimizer fused a RotaryEmbedding; None: try."""
    kind = getattr(config, "model_type", "this model")
    if config is not None and _alibi(config):
        return (f"{kind}'s attention adds an ALiBi position bias (a per-head linear bias on the scores), which "
                "GroupQueryAttention has no input for")
    if config is not None and not ort_rotary and _rotates(config):
        return (f"{kind} rotates its queries and keys in a form ONNX Runtime's transformers optimizer does not fuse into "
                "RotaryEmbedding (it fused none in this graph), and GroupQueryAttention rotates only with that node's "
                "cos/sin caches")
    return None


def fuse_gqa(source: Path, out: Path, positions: int | None = None, config: Any = None) -> Fusion:
    """Write `source` (a KV-cache decoder, fp32 weights) with every layer's attention as one
    GroupQueryAttention to `out`; raises NotFusable (nothing written) when its graph is not that form.
    `positions` (the model's declared positions): the rotary caches are cut to them, as
    onnxruntime-genai's builder makes them; a longer sequence is then refused by ONNX Runtime
    ("cos_cache dimension 0 shall not be less than total_sequence_length"). `config` (the model's
    transformers config, where known) names what stands in the way: ALiBi (BLOOM, MPT), a rotary
    embedding ONNX Runtime's optimizer did not fuse (GPT-J, Falcon)."""
    from onnx import helper

    from edgekd.graph.decoder import PAST_PREFIX, PRESENT_PREFIX

    if config is not None and _alibi(config):  # said before the optimizer runs
        raise NotFusable(str(_config_refusal(config, False)))
    model, ort = _ort_fusions(source)
    graph = model.graph
    if "attention_mask" not in {i.name for i in graph.input}:
        raise NotFusable("no 'attention_mask' input to take sequence lengths from")
    presents = sorted((o.name for o in graph.output if o.name.startswith(PRESENT_PREFIX) and o.name.endswith(".key")),
                      key=lambda n: int(n.split(".")[1]) if n.split(".")[1].isdigit() else n)
    pasts = {i.name: i for i in graph.input if i.name.startswith(PAST_PREFIX)}
    if not presents:
        raise NotFusable("no present key outputs")
    dims = pasts[presents[0].replace(PRESENT_PREFIX, PAST_PREFIX, 1)].type.tensor_type.shape.dim
    head_size = dims[-1].dim_value
    if head_size % 16:
        raise NotFusable(f"head size {head_size} is not a multiple of 16 (ONNX Runtime's GroupQueryAttention needs one)")
    g = Graph(graph)
    rotary = bool(ort.get("RotaryEmbedding"))  # none: keys as projected (a rotary ORT did not fuse is refused by kv_source)
    refusal = _config_refusal(config, rotary)
    if refusal:
        raise NotFusable(refusal)
    fused, heads = [], set()
    for key in presents:
        node, replaced, layer_heads = _layer_node(g, key, head_size, dims[1].dim_value, rotary)
        fused.append((node, replaced))
        heads.add(layer_heads)
    if len(heads) != 1:
        raise NotFusable(f"layers disagree on their head counts {sorted(heads)}")
    cache_rows = _cut_caches(g, [n for n, _ in fused], positions) if positions and rotary else 0
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
    return Fusion(len(presents), num_heads, kv_heads, head_size, ort, packed, rotary, cache_rows)


