"""Transformer graphs: recognise them from the graph, fuse them with ONNX Runtime's transformer
optimizer, and make the attention masks a fused graph must handle like the given one.

Recognition reads the graph, never a file name: a transformer has a normalization (LayerNormalization,
its fused forms, or the ReduceMean of a decomposed one) and attention, a Softmax whose input comes
from a MatMul (through the scale, the mask Add, casts) and whose output feeds a MatMul; or ONNX
Runtime's fused attention ops already. A graph with past key/values is a decoder step.

The attention-mask path (`mask_path`): the nodes from an attention-mask input to each Softmax it
masks (the mask arithmetic, the Add of scores and mask, the Softmax). Its values are 0 and the most
negative float (finfo.min): calibrated on masks of ones its range is [0, 0] and a padded mask at run
time is clamped to 0 (padding not masked); calibrated on padded masks the range reaches -3.4e38 and
every unmasked score rounds to one value (uniform attention). Quantization keeps that path in float
(TensorRT, ONNX Runtime CPU) or quantizes it on [-MASK_FLOOR, max] (the HTP, which runs only
quantized ops): a masked score becomes -MASK_FLOOR, whose weight after Softmax, e^-(MASK_FLOOR +
the row's largest score), is nil, and the unmasked scores keep their resolution. The Softmax
outputs (probabilities) would clip at a range calibrated on masks of ones (128 attended tokens: a
padded input's probabilities are larger), and in int8 steps of 1/127 a row of many small ones
misweighs: TensorRT and ONNX Runtime CPU keep the MatMul reading them in float too; the HTP
quantizes them on [0, 1] (uint16 in its mixed-precision recipe: steps of 1/65535).

Fusion is `onnxruntime.transformers.optimizer.optimize_model` with model_type "bert" (its encoder
fusions fit BERT, DistilBERT, RoBERTa and ViT exports; num_heads and hidden_size 0: read from the
graph's Reshape shapes) and opt_level 0 (the fusions only; ONNX Runtime's own graph optimizations run
when a session opens). The fused Attention takes the raw 2-D mask (AttentionMaskFormat.AttentionMask):
with the default (mask index = count of ones) a left-padded or gapped mask gives other numbers than
the export.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekd.common.toolchain import require
from edgekd.graph.inputs import ModelInputs

if TYPE_CHECKING:
    import onnx

MODEL_TYPE = "bert"
FUSED_ATTENTION = ("Attention", "MultiHeadAttention", "QAttention")
_NORMS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
          "EmbedLayerNormalization", "ReduceMean")
_BETWEEN = ("Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity", "Dropout", "Reshape", "Transpose")  # scale, mask, casts
_PAST = ("past", "present")
_HEAVY = ("MatMul", "Gemm", "Conv", "Attention", "MultiHeadAttention", "LayerNormalization")  # a mask path never crosses these
MASK_FLOOR = 32.0  # e^-32 ~ 1e-14: a masked position's weight next to any unmasked score above 0


def _reaches(start: str, target: str, producers: dict, consumers: dict, hops: int = 4) -> bool:
    """True when a MatMul is `hops` or fewer pass-through nodes from tensor `start`: upstream
    (target "producer") or downstream (target "consumer")."""
    frontier = [start]
    for _ in range(hops + 1):
        nodes = [producers[t] for t in frontier if t in producers] if target == "producer" else \
            [n for t in frontier for n in consumers.get(t, [])]
        if any(n.op_type == "MatMul" for n in nodes):
            return True
        nodes = [n for n in nodes if n.op_type in _BETWEEN]
        frontier = [t for n in nodes for t in (n.input if target == "producer" else n.output) if t]
    return False


def has_attention(model: onnx.ModelProto) -> bool:
    """A fused attention op, or a Softmax between MatMuls (scores -> probabilities -> values)."""
    graph = model.graph
    if any(n.op_type in FUSED_ATTENTION for n in graph.node):
        return True
    producers = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return any(_reaches(n.input[0], "producer", producers, consumers) and _reaches(n.output[0], "consumer", producers, consumers)
               for n in graph.node if n.op_type == "Softmax")


def is_transformer(model: onnx.ModelProto) -> bool:
    """Attention and a normalization in the graph (see the module docstring)."""
    return any(n.op_type in _NORMS for n in model.graph.node) and has_attention(model)


def is_decoder_step(model: onnx.ModelProto) -> bool:
    """Past key/values among the inputs or present ones among the outputs (a KV-cache decoder)."""
    names = [v.name for v in (*model.graph.input, *model.graph.output)]
    return any(name.startswith(_PAST) for name in names)


@contextlib.contextmanager
def quiet_optimizer() -> Iterator[None]:
    """onnxruntime.transformers logs every fusion pass (and that ViT wants num_heads) at INFO/WARNING."""
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def optimizer_on_path() -> None:
    """onnxruntime.transformers' modules import each other by bare name (`from fusion_options import
    ...`): its __init__ appends its folder to sys.path once per process. Put it back where something
    restored sys.path since (a test's monkeypatch)."""
    import sys

    import onnxruntime.transformers as package

    folder = str(Path(package.__file__).parent)
    if folder not in sys.path:
        sys.path.append(folder)


def fuse_transformer(model_path: Path, out_path: Path) -> dict[str, int]:
    """Write `model_path` fused by ONNX Runtime's transformer optimizer (see the module docstring)
    to `out_path`; returns the fused operators it counts (get_fused_operator_statistics, non-zero
    ones; empty: nothing fused, nothing written)."""
    onnx = require("onnx", "transformer fusion")
    require("onnxruntime", "transformer fusion")
    optimizer_on_path()
    from onnxruntime.transformers.fusion_options import (
        AttentionMaskFormat,
        FusionOptions,
    )
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(MODEL_TYPE)
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    with quiet_optimizer():
        optimized = optimize_model(str(model_path), model_type=MODEL_TYPE, num_heads=0, hidden_size=0, opt_level=0,
                                   optimization_options=options, use_gpu=False)
        applied = {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}
    if applied:
        given = onnx.load(str(model_path), load_external_data=False)
        del optimized.model.metadata_props[:]
        optimized.model.metadata_props.extend(given.metadata_props)
        optimized.save_model_to_file(str(out_path))  # sorts the nodes and imports the com.microsoft domain
    return applied


def attention_heads(model: onnx.ModelProto) -> list[int]:
    """num_heads of every fused attention node."""
    from onnx import helper

    return [helper.get_attribute_value(a) for n in model.graph.node if n.op_type in FUSED_ATTENTION
            for a in n.attribute if a.name == "num_heads"]


def mask_variants(arrays: dict[str, np.ndarray], inputs: ModelInputs, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """`arrays` with every attention mask (role "attention_mask", [batch, sequence]) replaced by a
    left-padded one ("left padding": 1 to half the sequence masked at the start) and a gapped one
    ("gaps": a quarter of the positions after the first masked): the masks generated feeds never
    have. Empty when the model has no such input."""
    masks = [i.name for i in inputs.inputs if i.role == "attention_mask" and len(i.shape) == 2 and i.name in arrays]
    if not masks:
        return {}
    rng = np.random.default_rng(seed)
    rows, length = arrays[masks[0]].shape
    left = np.ones((rows, length), dtype=bool)
    for row, count in enumerate(rng.integers(1, max(2, length // 2 + 1), size=rows)):
        left[row, :count] = False
    gaps = rng.random((rows, length)) >= 0.25
    gaps[:, 0] = True
    return {what: {**arrays, **{name: mask.astype(arrays[name].dtype) for name in masks}}
            for what, mask in (("left padding", left), ("gaps", gaps))}


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed or duplicate-named node a unique name (`<op_type>_<index>`): quantization
    settings name nodes (nodes_to_exclude, the nodes receiving a converted tensor)."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


@dataclass(frozen=True)
class MaskPath:
    """The attention-mask path of a graph (see the module docstring)."""

    nodes: list[str]  # node names, from the mask inputs to each Softmax they mask (included)
    masked: list[tuple[str, str]]  # (masked scores, mask): the tensors of each Add feeding a Softmax
    probabilities: list[str]  # the output of each of those Softmaxes: values in [0, 1]


def mask_path(model: onnx.ModelProto, mask_inputs: list[str]) -> MaskPath:
    """The attention-mask path from the graph inputs `mask_inputs`. Nodes must be named
    (`name_nodes`)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes: dict[str, onnx.NodeProto] = {}
    masked: list[tuple[str, str]] = []
    reached, frontier = set(mask_inputs), list(mask_inputs)
    while frontier:
        tensor = frontier.pop()
        for node in consumers.get(tensor, []):
            if node.op_type in _HEAVY or node.name in nodes:
                continue
            nodes[node.name] = node
            if node.op_type == "Softmax":
                continue
            if node.op_type == "Add" and any(c.op_type == "Softmax" for c in consumers.get(node.output[0], [])):
                masked.append((node.output[0], tensor))
            for out in (o for o in node.output if o not in reached):
                reached.add(out)
                frontier.append(out)
    return _to_softmax(nodes, masked)


def _to_softmax(nodes: dict[str, onnx.NodeProto], masked: list[tuple[str, str]]) -> MaskPath:
    """The part of `nodes` (reached from the masks) that feeds a masked Softmax: the mask may also
    reach other nodes (a mean pooling over the mask), which are no part of the path."""
    producers = {out: node for node in nodes.values() for out in node.output}
    adds = [producers[scores] for scores, _ in masked]
    keep = {n.name for n in adds}
    frontier = [mask for _, mask in masked]
    while frontier:
        node = producers.get(frontier.pop())
        if node is not None and node.name not in keep:
            keep.add(node.name)
            frontier.extend(node.input)
    softmaxes = [n for n in nodes.values() if n.op_type == "Softmax" and n.input[0] in {a.output[0] for a in adds}]
    keep.update(n.name for n in softmaxes)
    return MaskPath([name for name in nodes if name in keep], masked, [n.output[0] for n in softmaxes])
