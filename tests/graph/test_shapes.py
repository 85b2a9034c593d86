"""edgekd/graph/shapes.py: shapes of real exports through ONNX's inference, ONNX Runtime's symbolic
inference and one ONNX Runtime run; what stays unknown is listed per node, not raised."""
from __future__ import annotations

import onnx
import pytest
from helpers import ZOO
from onnx import TensorProto, helper

from edgekd.graph.inputs import ModelInputs, ResolvedInput
from edgekd.graph.resolve import load_inputs, resolve_inputs
from edgekd.graph.shapes import infer_shapes, static_model


@pytest.mark.parametrize("arch,exporter", ZOO)
def test_every_tensor_of_every_zoo_model_gets_a_shape(zoo, arch: str, exporter: str) -> None:
    path = zoo(arch, exporter)
    found = infer_shapes(onnx.load(str(path)), load_inputs(path))
    assert found.unknown == []
    assert found.methods[0] == "onnx.shape_inference (data propagation)"
    model = static_model(onnx.load(str(path)), load_inputs(path))
    for out in model.graph.output:
        assert all(d.HasField("dim_value") for d in out.type.tensor_type.shape.dim)


def test_optimum_bert_needs_symbolic_inference(zoo) -> None:
    path = zoo("bert", "optimum")
    found = infer_shapes(onnx.load(str(path)), load_inputs(path))
    assert any(m.startswith("onnxruntime symbolic_shape_infer") for m in found.methods)
    assert found.shape("logits") == (1, 3)


def _model(nodes: list, inputs: list, outputs: list, opsets: tuple = (("", 18),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _float(name: str, shape: tuple) -> ResolvedInput:
    return ResolvedInput(name, "float32", shape, "float", ("model",) * len(shape), 0)


def test_data_dependent_shapes_come_from_one_onnxruntime_run() -> None:
    """NonZero's output length depends on the values: only running the graph tells it."""
    model = _model([helper.make_node("NonZero", ["x"], ["idx"]), helper.make_node("Transpose", ["idx"], ["t"], perm=[1, 0])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("t", TensorProto.INT64, None)])
    found = infer_shapes(model, ModelInputs((_float("x", (2, 3)),)))
    assert found.unknown == [] and found.shape("t")[1] == 2
    assert any(m.startswith("onnxruntime run once on generated feeds: ") for m in found.methods)


def test_a_graph_nothing_can_run_is_reported_per_node() -> None:
    model = _model([helper.make_node("Mystery", ["x"], ["y"], domain="com.example", name="mystery"),
                    helper.make_node("Relu", ["y"], ["z"], name="relu")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], (("", 18), ("com.example", 1)))
    inputs = resolve_inputs(model)
    found = infer_shapes(model, inputs)
    assert {u["node"] for u in found.unknown} == {"mystery", "relu"}
    assert "the run failed" in found.methods[-1]
