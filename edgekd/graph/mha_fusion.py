"""Fusing an encoder's self-attention into ONNX Runtime's `com.microsoft.MultiHeadAttention`.

ONNX Runtime's transformers optimizer (edgekd.graph.transformer) fuses BERT-style attention, but not
the form torch.onnx writes for transformers' SDPA attention (ViT, DeiT: Q and K each scaled by
sqrt(scale) before their product, no mask): that graph runs every layer as head-split Reshape +
Transpose of Q, K and V, two batched MatMuls, Softmax, and a Transpose + Reshape merging the heads
(ViT-Tiny on an AVX-512 VNNI host: those Transposes alone were 5 % of the INT8 engine). This module
rewrites each such attention into one MultiHeadAttention node reading the projected Q, K and V
(batch, sequence, hidden), with the heads and the scale taken from the graph:

    q -> Reshape [B,S,H,Dh] -> Transpose(0,2,1,3) [-> Mul c_q] --\\
    k -> Reshape [B,S,H,Dh] -> Transpose(s) to (0,2,3,1) [-> Mul c_k] -> MatMul [-> Mul/Div c] -> Softmax(-1)
    v -> Reshape [B,S,H,Dh] -> Transpose(0,2,1,3) ------------------------------------> MatMul(probs, v)
        -> Transpose(0,2,1,3) -> Reshape [B,S,H*Dh]  ==>  MultiHeadAttention(q, k, v, num_heads=H, scale=c_q*c_k*c)

torch.onnx's dynamo exporter writes K's transpose as Reshape to 3-D, Transpose(0, 2, 1), Reshape back;
that is read as the same swap of the last two axes. Masked attention (an Add before the Softmax) is left to ONNX Runtime's optimizer and refused here
with that reason. Nothing is trusted: `verify` (edgekd.graph.graph_edit) compares the two graphs'
outputs, and the tuner measures whether the fused graph is faster (edgekd.backends.ort.encoder_tune).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.toolchain import require
from edgekd.graph.graph_edit import Graph, NotFusable, constant, prune, save, scaled

MS = "com.microsoft"
_HEAD_SPLIT = (0, 2, 1, 3)
_KEY_TRANSPOSED = (0, 2, 3, 1)


@dataclass(frozen=True)
class Fusion:
    """What `fuse_mha` wrote."""

    layers: int
    num_heads: int
    scale: float

    def describe(self) -> str:
        return (f"self-attention of {self.layers} layers fused into com.microsoft.MultiHeadAttention ({self.num_heads} heads, "
                f"scale {self.scale:.6g}, no mask)")


def _perm(node: Any) -> tuple[int, ...]:
    from onnx import helper

    return tuple(next((helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"), ()))


def _heads(g: Graph, reshape: Any) -> tuple[int, int]:
    """(heads, head size) of a head-split Reshape [B, S, H, Dh]: a constant shape, or a Concat whose last two pieces are."""
    shape = constant(g, reshape.input[1])
    if shape is None and (concat := g.producer.get(reshape.input[1])) is not None and concat.op_type == "Concat" and len(concat.input) == 4:
        pieces = [constant(g, i) for i in concat.input[2:]]
        shape = None if any(p is None for p in pieces) else np.array([0, 0, *(int(p.reshape(-1)[0]) for p in pieces)])
    if shape is None or shape.size != 4 or min(int(shape[2]), int(shape[3])) <= 0:
        raise NotFusable(f"the head split {reshape.name} has no constant [.., .., heads, head size] shape")
    return int(shape[2]), int(shape[3])


def _batched_transpose(g: Graph, node: Any) -> list[Any]:
    """torch.onnx's dynamo export of k.transpose(-2, -1) inside SDPA: Reshape to 3-D, Transpose(0, 2, 1),
    Reshape back to 4-D. Taken as a swap of the last two axes; `verify` checks the rewritten graph's
    outputs, so a reading this gets wrong is caught there."""
    if node is None or node.op_type != "Reshape":
        return []
    middle = g.producer.get(node.input[0])
    if middle is None or middle.op_type != "Transpose" or _perm(middle) != (0, 2, 1):
        return []
    inner = g.producer.get(middle.input[0])
    return [node, middle, inner] if inner is not None and inner.op_type == "Reshape" else []


def _split(g: Graph, name: str, want: tuple[int, ...], nodes: list[Any]) -> tuple[str, int, int]:
    """From a head-split tensor back to the projection it splits: (its name, heads, head size); the
    Transposes passed must compose to `want`."""
    perm: tuple[int, ...] = (0, 1, 2, 3)
    while True:
        node = g.producer.get(name)
        if node is not None and node.op_type == "Transpose":
            step, passed = _perm(node) or (3, 2, 1, 0), [node]
        elif (passed := _batched_transpose(g, node)):
            step = (0, 1, 3, 2)
        else:
            break
        perm = tuple(step[p] for p in perm)
        nodes.extend(passed)
        name = passed[-1].input[0]
    if perm != want:
        raise NotFusable(f"'{name}' reaches the attention through Transposes {perm}, not {want}")
    reshape = g.parent(name, "Reshape")
    nodes.append(reshape)
    return reshape.input[0], *_heads(g, reshape)


def _layer(g: Graph, softmax: Any) -> tuple[Any, list[Any], int, float]:
    """One attention around `softmax`: (its MultiHeadAttention node, the nodes it replaces, heads, scale)."""
    from onnx import helper

    axis = next((helper.get_attribute_value(a) for a in softmax.attribute if a.name == "axis"), -1)
    if axis not in (-1, 3):
        raise NotFusable(f"{softmax.name} normalizes axis {axis}, not the keys")
    replaced: list[Any] = [softmax]
    scores, score_scale = scaled(g, softmax.input[0], replaced)
    if g.producer.get(scores) is not None and g.producer[scores].op_type == "Add":
        raise NotFusable(f"{softmax.name} reads masked scores (left to ONNX Runtime's attention fusion)")
    qk = g.parent(scores, "MatMul")
    replaced.append(qk)
    q_split, q_scale = scaled(g, qk.input[0], replaced)
    k_split, k_scale = scaled(g, qk.input[1], replaced)
    q, heads, head_size = _split(g, q_split, _HEAD_SPLIT, replaced)
    k, k_heads, _ = _split(g, k_split, _KEY_TRANSPOSED, replaced)
    users = g.consumers.get(softmax.output[0], [])
    if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != softmax.output[0]:
        raise NotFusable(f"{softmax.name}'s probabilities are not read by one probabilities·V MatMul")
    pv = users[0]
    v, v_heads, _ = _split(g, pv.input[1], _HEAD_SPLIT, replaced)
    merge = [c for c in g.consumers.get(pv.output[0], []) if c.op_type == "Transpose" and _perm(c) == _HEAD_SPLIT]
    reshape = merge and next((c for c in g.consumers.get(merge[0].output[0], []) if c.op_type == "Reshape"), None)
    if not reshape or len(g.consumers.get(pv.output[0], [])) != 1:
        raise NotFusable(f"{pv.name} (probabilities·V) is not followed by the heads' Transpose + Reshape only")
    if len({heads, k_heads, v_heads}) != 1:
        raise NotFusable(f"Q, K and V of {softmax.name} split into {heads}/{k_heads}/{v_heads} heads")
    replaced += [pv, merge[0], reshape]
    inside = {o for n in replaced[:-1] for o in n.output}
    outputs = {o.name for o in g.graph.output}
    if any(o in outputs or any(c not in replaced and c.op_type != "Shape" for c in g.consumers.get(o, [])) for o in inside):
        raise NotFusable(f"a tensor inside {softmax.name}'s attention is read elsewhere")
    scale = q_scale * k_scale * score_scale
    node = helper.make_node("MultiHeadAttention", [q, k, v], [reshape.output[0]], name=f"{softmax.name}_mha", domain=MS,
                            num_heads=heads, scale=scale)
    return node, replaced, heads, scale


def fuse_mha(source: Path, out: Path) -> Fusion:
    """Write `source` with every unmasked self-attention as one MultiHeadAttention to `out`; raises
    NotFusable (nothing written) when no Softmax is that form or the layers disagree."""
    onnx = require("onnx", "encoder attention fusion")
    from onnx import helper

    model = onnx.load(str(source))
    graph = model.graph
    g = Graph(graph)
    softmaxes = [n for n in graph.node if n.op_type == "Softmax"]
    if not softmaxes:
        raise NotFusable("no Softmax (no attention) in the graph")
    layers = [_layer(g, s) for s in softmaxes]
    if len({(heads, round(scale, 6)) for _, _, heads, scale in layers}) != 1:
        raise NotFusable("the attention layers disagree on heads or scale")
    for node, replaced, _, _ in layers:
        graph.node.insert(list(graph.node).index(replaced[-1]), node)
        for old in replaced:
            graph.node.remove(old)
    if not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    prune(graph)
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    if any(i and i not in known for n in graph.node for i in n.input):
        raise NotFusable("a Shape of a tensor inside an attention is used beyond that attention's own Reshape")
    save(model, out)
    return Fusion(len(layers), layers[0][2], layers[0][3])
