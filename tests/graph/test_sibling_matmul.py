"""edgekd.graph.sibling_matmul: MatMuls reading one activation with constant weights of equal K become
one MatMul + Split with the same outputs; weights of another K, shared weights and non-constant weights
are left alone."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.graph.graph_edit import prune, session
from edgekd.graph.sibling_matmul import pack_sibling_matmuls


def _model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = {name: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
         for name, shape in {"gate": (8, 12), "up": (8, 12), "other_k": (4, 5), "wide": (8, 3)}.items()}
    nodes = [helper.make_node("MatMul", ["x", "gate"], ["g"]), helper.make_node("Sigmoid", ["g"], ["s"]),
             helper.make_node("Mul", ["g", "s"], ["silu"]), helper.make_node("MatMul", ["x", "up"], ["u"]),
             helper.make_node("Mul", ["silu", "u"], ["h"]), helper.make_node("MatMul", ["x", "wide"], ["z"]),
             helper.make_node("MatMul", ["y", "other_k"], ["o"]), helper.make_node("MatMul", ["x", "y2"], ["dyn"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8]),
                                             helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4]),
                                             helper.make_tensor_value_info("y2", TensorProto.FLOAT, [8, 6])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("h", "z", "o", "dyn")], list(w.values()))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_siblings_pack_into_one_matmul_with_the_same_outputs(tmp_path: Path) -> None:
    given = _model(tmp_path / "mlp.onnx")
    model = onnx.load(str(given))
    assert pack_sibling_matmuls(model.graph) == 1
    prune(model.graph)
    onnx.save(model, str(tmp_path / "packed.onnx"))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["MatMul"] == 3 and ops["Split"] == 1  # gate+up+wide packed; other_k (another input) and the dynamic weight kept
    packed = next(i for i in model.graph.initializer if i.name.endswith("_weight"))
    assert list(packed.dims) == [8, 27] and not {"gate", "up", "wide"} & {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(1)
    feed = {"x": rng.standard_normal((1, 2, 8)).astype(np.float32), "y": rng.standard_normal((1, 2, 4)).astype(np.float32),
            "y2": rng.standard_normal((8, 6)).astype(np.float32)}
    for a, b in zip(session(given).run(None, feed), session(tmp_path / "packed.onnx").run(None, feed)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_a_weight_another_node_reads_too_is_not_packed(tmp_path: Path) -> None:
    model = onnx.load(str(_model(tmp_path / "mlp.onnx")))
    model.graph.node.append(helper.make_node("Identity", ["up"], ["up_copy"]))
    model.graph.output.append(helper.make_tensor_value_info("up_copy", TensorProto.FLOAT, None))
    assert pack_sibling_matmuls(model.graph) == 1
    split = next(n for n in model.graph.node if n.op_type == "Split")
    assert list(split.output) == ["g", "z"]  # gate and wide; up stays its own MatMul
