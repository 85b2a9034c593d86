"""Editing ONNX graphs for the attention fusions (edgekd.graph.gqa_fusion, edgekd.graph.mha_fusion):
producer/consumer lookups, pruning what no output needs, saving, and the check that a rewritten
graph computes what the given one does (`verify`: both run in ONNX Runtime on real feeds)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.toolchain import require

TOLERANCE = 1e-3  # max |difference| of any output, relative to its largest magnitude


class NotFusable(Exception):
    """The graph is not the attention form this module rewrites; the message says what differs."""


class Graph:
    """Producer/consumer lookups over an onnx GraphProto."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in graph.initializer}

    def parent(self, name: str, op: str | tuple[str, ...]) -> Any:
        node = self.producer.get(name)
        ops = (op,) if isinstance(op, str) else op
        if node is None or node.op_type not in ops:
            raise NotFusable(f"'{name}' is not made by {'/'.join(ops)}")
        return node


def constant(g: Graph, name: str) -> np.ndarray | None:
    """The value of an initializer or a Constant node's output, through Identity nodes (torch.onnx
    shares equal constants so); None for anything computed."""
    from onnx import numpy_helper

    node = g.producer.get(name)
    while node is not None and node.op_type == "Identity":
        name, node = node.input[0], g.producer.get(node.input[0])
    if name in g.inits:
        return numpy_helper.to_array(g.inits[name])
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def scaled(g: Graph, name: str, nodes: list[Any] | None = None) -> tuple[str, float]:
    """Walk up through Mul/Div by a one-element constant from `name`: (the unscaled tensor, the
    factor); the nodes walked through are appended to `nodes`."""
    factor = 1.0
    while (node := g.producer.get(name)) is not None and node.op_type in ("Mul", "Div"):
        values = [constant(g, i) for i in node.input]
        scalar = next((i for i, v in enumerate(values) if v is not None and v.size == 1), None)
        if scalar is None or (node.op_type == "Div" and scalar != 1):
            break
        value = float(values[scalar].reshape(-1)[0])
        factor *= 1.0 / value if node.op_type == "Div" else value
        if nodes is not None:
            nodes.append(node)
        name = node.input[1 - scalar]
    return name, factor


def prune(graph: Any) -> None:
    """Drop nodes (graph in topological order) and initializers no graph output depends on."""
    live = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in live for o in node.output):
            keep.append(node)
            live.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in live]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(infos)


def save(model: Any, out: Path) -> None:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_800_000_000
    onnx.save(model, str(out), save_as_external_data=large, location=f"{out.name}.data" if large else None)


def verify(reference: Path, fused: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """The largest |difference| of any output between the two graphs over `feeds` (an absent past:
    empty), relative to that output's largest magnitude; raises NotFusable above TOLERANCE or when
    ONNX Runtime cannot run the fused graph."""
    from edgekd.graph.decoder import complete_feeds

    worst = 0.0
    ref_session, fused_session = session(reference), on_ort(lambda: session(fused))
    names, fused_names = [o.name for o in ref_session.get_outputs()], [o.name for o in fused_session.get_outputs()]
    for feed in feeds:
        feed = complete_feeds(ref_session, feed)
        expected = dict(zip(names, ref_session.run(None, feed)))
        got = dict(zip(fused_names, on_ort(lambda: fused_session.run(None, feed))))  # noqa: B023 (called at once)
        for name, value in expected.items():
            scale = max(float(np.abs(value).max(initial=0.0)), 1e-6)
            worst = max(worst, float(np.abs(got[name] - value).max(initial=0.0)) / scale)
    if worst > TOLERANCE:
        raise NotFusable(f"the fused graph's outputs differ by {worst:.2e} (relative) from the exported graph's")
    return worst


def session(model: Path) -> Any:
    """An ONNX Runtime CPU session with basic optimizations: each graph as written."""
    ort = require("onnxruntime", "checking a fused graph")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3  # errors only (an input with a default, e.g. logits_to_keep, is a warning)
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def on_ort(call: Any) -> Any:
    """`call()`; ONNX Runtime refusing to load or run the fused graph is NotFusable."""
    try:
        return call()
    except Exception as e:  # onnxruntime raises its own Fail/InvalidArgument/... types for a graph it cannot run
        raise NotFusable(f"ONNX Runtime cannot run the fused graph: {str(e).splitlines()[0][:300]}") from e
