"""Packing sibling MatMuls: two or more MatMuls that read the same activation with constant 2-D
weights of the same K become one MatMul over the weights side by side, and a Split gives each its
own output back. A Llama MLP's gate and up projections are such a pair.

At a decode step every projection is a matrix-vector product whose time is reading its weights plus
a fixed cost per kernel call (the thread pool's dispatch, the activation's per-block quantization of
MatMulNBits at accuracy level 4): one call over [K, N1 + N2] pays that once. The numbers are the
same (each output column is the same dot product); the weight-only and dynamic INT8 quantizers then
quantize the packed weight like any other (per-column scales: unchanged; blocks run along K).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.graph.graph_edit import Graph

PREFIX = "edgekd_packed"


def _siblings(g: Graph) -> list[list[Any]]:
    """Groups (in graph order) of at least two MatMuls reading one activation with constant 2-D fp32
    weights of equal K, each weight read by that MatMul only."""
    groups = []
    for name, readers in g.consumers.items():
        if name in g.inits:
            continue
        found = [n for n in readers if n.op_type == "MatMul" and n.domain in ("", "ai.onnx") and n.input[0] == name
                 and (w := g.inits.get(n.input[1])) is not None and len(w.dims) == 2 and w.data_type == 1
                 and len(g.consumers.get(n.input[1], [])) == 1]
        by_k: dict[int, list[Any]] = {}
        for node in found:
            by_k.setdefault(g.inits[node.input[1]].dims[0], []).append(node)
        groups += [nodes for nodes in by_k.values() if len(nodes) > 1]
    return groups


def pack_sibling_matmuls(graph: Any) -> int:
    """Rewrite every group of sibling MatMuls in `graph` (an onnx GraphProto, opset >= 13: Split takes
    its sizes as an input) into one MatMul + Split; returns how many groups were packed. The unused
    weights are left for edgekd.graph.graph_edit.prune."""
    from onnx import helper, numpy_helper

    g = Graph(graph)
    groups = _siblings(g)
    for index, nodes in enumerate(groups):
        weights = [numpy_helper.to_array(g.inits[n.input[1]]) for n in nodes]
        name = f"{PREFIX}_{index}"
        graph.initializer.append(numpy_helper.from_array(np.concatenate(weights, axis=1), f"{name}_weight"))
        graph.initializer.append(numpy_helper.from_array(np.array([w.shape[1] for w in weights], np.int64), f"{name}_sizes"))
        matmul = helper.make_node("MatMul", [nodes[0].input[0], f"{name}_weight"], [f"{name}_out"], name=f"{name}_MatMul")
        split = helper.make_node("Split", [f"{name}_out", f"{name}_sizes"], [n.output[0] for n in nodes], name=f"{name}_Split", axis=-1)
        first = min(list(graph.node).index(n) for n in nodes)
        for node in nodes:
            graph.node.remove(node)
        graph.node.insert(first, split)
        graph.node.insert(first, matmul)
    return len(groups)
