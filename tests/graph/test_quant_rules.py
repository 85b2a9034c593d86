"""Q/DQ graphs checked against a target's quantization recipe."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.config.target import TargetQuantize
from edgekd.graph.quant_rules import qdq_violations


def _graph(act_zp: np.ndarray, weight_zp: np.ndarray, with_bias: bool = True) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(act_zp, "act_zp"),
        numpy_helper.from_array(np.ones((2, 1, 3, 3), weight_zp.dtype), "w_q"),
        numpy_helper.from_array(np.full(2, 0.05, np.float32), "w_s"),
        numpy_helper.from_array(weight_zp, "w_zp"),
        numpy_helper.from_array(np.zeros(2, np.int32), "b_q"),
        numpy_helper.from_array(np.full(2, 0.005, np.float32), "b_s"),
        numpy_helper.from_array(np.zeros(2, np.int32), "b_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "act_zp"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "s", "act_zp"], ["xd"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["w"], name="dq_w", axis=0),
        helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_zp"], ["b"], name="dq_b"),
        helper.make_node("Conv", ["xd", "w", "b"] if with_bias else ["xd", "w"], ["y"], name="conv"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_s8s8_graph_fits_the_x86_recipe():
    model = _graph(np.array(-128, np.int8), np.zeros(2, np.int8))
    assert qdq_violations(model, TargetQuantize()) == []


def test_asymmetric_activations_break_a_symmetric_recipe():
    model = _graph(np.array(-128, np.int8), np.zeros(2, np.int8))
    problems = qdq_violations(model, TargetQuantize(symmetric_activations=True))
    assert len(problems) == 2 and all("not 0" in p and "activation" in p for p in problems)
    assert {p.split("'")[1] for p in problems} == {"q_in", "dq_in"}


def test_symmetric_graph_fits_the_tensorrt_recipe():
    model = _graph(np.array(0, np.int8), np.zeros(2, np.int8))
    assert qdq_violations(model, TargetQuantize(symmetric_activations=True, symmetric_weights=True)) == []


@pytest.mark.parametrize(("act", "weight", "expected"), [("uint8", "uint8", 3), ("uint16", "int8", 2)])
def test_wrong_types_are_named(act, weight, expected):
    model = _graph(np.array(-128, np.int8), np.zeros(2, np.int8))
    problems = qdq_violations(model, TargetQuantize(activation_type=act, weight_type=weight))
    assert len(problems) == expected
    assert all("the target needs" in p for p in problems)


def test_nonzero_weight_zero_point_is_reported():
    model = _graph(np.array(-128, np.int8), np.array([0, 3], np.int8))
    problems = qdq_violations(model, TargetQuantize())
    assert problems == ["DequantizeLinear 'dq_w': weight zero point [0, 3] is not 0 (the target needs symmetric quantization)"]


@pytest.mark.parametrize("target,expected", [("x86", []), ("jetson-orin", ["zero point [5] is not 0"])])
def test_a_table_read_by_gather_is_quantized_as_an_activation(target: str, expected: list[str]) -> None:
    """onnxruntime.quantization quantizes an embedding table (a Gather's data) with the activation
    recipe: asymmetric is fine for x86 S8S8; TensorRT needs every zero point 0."""
    from edgekd.config.loading import ConfigSearch, load_target

    inits = [numpy_helper.from_array(np.ones((10, 4), np.int8), "table_q"), numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(5, np.int8), "zp")]
    nodes = [helper.make_node("DequantizeLinear", ["table_q", "s", "zp"], ["table"], name="dq_table"),
             helper.make_node("Gather", ["table", "ids"], ["y"], name="embed")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    problems = qdq_violations(helper.make_model(graph), load_target(target, ConfigSearch()).config.quantize)
    assert [p for p in problems if all(e in p for e in expected)] == problems and len(problems) == len(expected)
    assert all("activation zero point" in p for p in problems)
