"""A `logits_to_keep` input for a decoder graph: its language-model head computes the logits of the
last K positions only (K = 0: all of them, the graph as exported).

A prompt pass needs the logits of the prompt's last position only (the first generated token), yet
an exported decoder computes the head for every position: for a 135 M Llama (hidden 576, vocabulary
49152) at a 128-token prompt that is 3.6 of its 17.8 G MACs. transformers' models have the same
argument (`logits_to_keep`, 0 = all) and llama.cpp computes only the last position's logits by
default. Here it is an ONNX graph input with a default initializer of 0 (ONNX Runtime lists it among
`get_overridable_initializers()`, not `get_inputs()`): whoever does not feed it gets every position's
logits as before (the evaluate stage's perplexity); the decoder scenarios and the tuner's prompt pass
feed 1 (edgekd.perf.decoder). A Slice of the head's input along the sequence axis does it, so the
rewrite is exact: with K = 1 the logits are the last row of the full logits, and quantizers and
fusions applied later see a plain MatMul.

A head tied to the token embedding (SmolLM, Qwen2.5/Qwen3 small sizes, Gemma, Llama 3.2) reads its
weight through a Transpose of the embedding table; onnxruntime.quantization quantizes only MatMuls
whose weight is an initializer ("Ignore MatMul due to non constant B"), so every quantized variant kept
an fp32 head: 113 MB read per decode step for a 135 M model whose INT4 body is ~60 MB. The rewrite
therefore also stores such a weight as its own initializer (the same values: exact), so the head is
quantized like every other MatMul; the embedding stays float for its Gather.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.graph.graph_edit import Graph, NotFusable, constant, prune, save

KEEP = "logits_to_keep"  # the input's name, as transformers' forward argument
_PASSTHROUGH = ("Cast", "Identity")  # ops between the head's MatMul and the logits output
_PER_POSITION = ("Add", "Sub", "Mul", "Div")  # ... and these, with a constant the same for every position (_per_position)
_CONSTANT = ("Transpose", "Cast", "Identity", "Constant")  # how a tied head's weight may reach the MatMul


@dataclass(frozen=True)
class KeepRewrite:
    head: str  # the language-model head's MatMul node
    logits: str  # the output it makes
    untied: str | None = None  # the initializer a tied head's weight was computed from (now stored as its own)

    def describe(self) -> str:
        tied = (f"; the head's weight, computed from '{self.untied}' (a tied embedding), stored as its own initializer so the "
                "quantizers quantize the head" if self.untied else "")
        return (f"input '{KEEP}' (int64 [1], default 0 = every position) slicing the last K positions before the language-model "
                f"head {self.head}: a prompt pass fed 1 computes the '{self.logits}' of its last position only{tied} "
                "(edgekd.graph.logits_to_keep)")


def _constant(g: Graph, name: str) -> bool:
    """Whether `name` is an initializer or made from one by Transpose/Cast/Identity/Constant only."""
    while name not in g.inits:
        node = g.producer.get(name)
        if node is None or node.op_type not in _CONSTANT:
            return False
        if node.op_type == "Constant":
            return True
        name = node.input[0]
    return True


def _untie(g: Graph, head: Any) -> str | None:
    """Store the head's weight as an initializer where it is computed from one by Transpose/Cast/
    Identity/Constant (a tied embedding); returns the initializer it came from, or None (already one)."""
    from onnx import helper, numpy_helper

    chain, name = [], head.input[1]
    while name not in g.inits:
        node = g.producer[name]  # _head checked the weight is constant: these ops only
        chain.append(node)
        if node.op_type == "Constant":
            break
        name = node.input[0]
    if not chain:
        return None
    value = constant(g, chain[-1].output[0] if chain[-1].op_type == "Constant" else name)
    for node in reversed(chain[:-1] if chain[-1].op_type == "Constant" else chain):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose":
            value = np.transpose(value, attrs.get("perm"))
        elif node.op_type == "Cast":
            value = value.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    weight = f"{name}/lm_head"
    g.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), weight))
    head.input[1] = weight
    return name


def _per_position(g: Graph, node: Any) -> str | None:
    """The non-constant input of an element-wise Add/Sub/Mul/Div whose other input is a constant the
    same for every position (rank < 2, or 1 along the sequence axis): a head's bias (Phi) or a logits
    scale (Granite) computes each position's logits from that position's alone, so the Slice may
    go before it. None for any other node."""
    if node.op_type not in _PER_POSITION or len(node.input) != 2:
        return None
    dims = [None if (value := constant(g, name)) is None else value.shape for name in node.input]
    for chain, other in ((0, 1), (1, 0)):
        if dims[chain] is None and dims[other] is not None and (len(dims[other]) < 2 or dims[other][-2] == 1):
            return node.input[chain]
    return None


def _head(g: Graph, logits: str) -> Any:
    """The MatMul whose product, through Cast/Identity and per-position constant Add/Sub/Mul/Div only,
    is `logits`, with a constant weight as its second input; raises NotFusable where the logits are
    made otherwise."""
    node = g.producer.get(logits)
    while node is not None and (node.op_type in _PASSTHROUGH or _per_position(g, node) is not None):
        node = g.producer.get(node.input[0] if node.op_type in _PASSTHROUGH else _per_position(g, node))
    if node is None or node.op_type != "MatMul":
        made = "a graph input or initializer" if node is None else f"{node.op_type} ({node.name})"
        raise NotFusable(f"the output '{logits}' is made by {made}, not by a MatMul with the head's weights")
    if not _constant(g, node.input[1]) or _constant(g, node.input[0]):
        raise NotFusable(f"the MatMul {node.name} making '{logits}' does not multiply hidden states by constant weights")
    return node


def add_logits_to_keep(source: Path, out: Path, logits: str | None = None, untie: bool = True) -> KeepRewrite:
    """Write `source` to `out` with the `logits_to_keep` input before the head that makes `logits`
    (default: the output named 'logits', else the first), a tied head's weight stored as its own
    initializer (_untie; `untie` False leaves it: for measuring what that is worth). Raises NotFusable where there is no such head or the graph has the input already."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    if KEEP in {i.name for i in graph.input} | {i.name for i in graph.initializer}:
        raise NotFusable(f"{source.name} has a '{KEEP}' already")
    names = [o.name for o in graph.output]
    logits = logits or ("logits" if "logits" in names else names[0])
    g = Graph(graph)
    head = _head(g, logits)
    hidden, start, sliced = head.input[0], f"{KEEP}/start", f"{KEEP}/hidden"
    nodes = [helper.make_node("Neg", [KEEP], [start], name=f"{KEEP}/Neg"),
             helper.make_node("Slice", [hidden, start, f"{KEEP}/end", f"{KEEP}/axis"], [sliced], name=f"{KEEP}/Slice")]
    position = list(graph.node).index(head)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    head.input[0] = sliced
    untied = _untie(g, head) if untie else None
    graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), KEEP),
                              numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), f"{KEEP}/end"),
                              numpy_helper.from_array(np.array([-2], np.int64), f"{KEEP}/axis")])  # [batch, sequence, hidden]
    graph.input.append(helper.make_tensor_value_info(KEEP, TensorProto.INT64, [1]))
    for out_info in graph.output:
        if out_info.name == logits and len(out_info.type.tensor_type.shape.dim) == 3:
            out_info.type.tensor_type.shape.dim[1].dim_param = "logits_positions"  # K, or the sequence when K = 0
    model.ir_version = max(model.ir_version, 4)  # an input with a default initializer (IR 4 and later)
    prune(graph)  # a tied weight's Transpose/Cast no longer feeds the head
    save(model, out)
    return KeepRewrite(head.name or head.output[0], logits, untied)


def optional_input() -> dict[str, object]:
    """The engine record's entry for the input (engine.json's tuning, the model card)."""
    return {"name": KEEP, "dtype": "int64", "shape": [1], "default": 0,
            "how": "the number of last positions whose logits are computed (0: every position, the export's outputs); feed 1 in "
                   "the prompt pass of generation (edgekd's bench does) so the language-model head runs for the last position only"}


def last_logits_gap(source: Path, rewritten: Path, feed: dict[str, np.ndarray]) -> float:
    """The largest |difference| between `rewritten`'s logits at logits_to_keep 1 and the last row of
    `source`'s logits on `feed`, relative to their largest magnitude (0 for an exact rewrite of a float
    head; a dynamically quantized head's activation scale then covers one row, not all)."""
    from edgekd.graph.decoder import complete_feeds
    from edgekd.graph.graph_edit import session

    ref, new = session(source), session(rewritten)
    full = ref.run(None, complete_feeds(ref, feed))[0][:, -1:]
    last = new.run(None, {**complete_feeds(new, feed), KEEP: np.array([1], np.int64)})[0]
    return float(np.abs(last - full).max(initial=0.0)) / max(float(np.abs(full).max(initial=0.0)), 1e-6)
