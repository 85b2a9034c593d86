"""edgekd/analysis/rules_tensorrt.py on small onnx.helper graphs, and on a real QDQ model: a tiny
torch CNN exported with the dynamo exporter (opset 18) and quantized by onnxruntime.quantization."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.analysis.rules_tensorrt import check_qdq_symmetric, check_tensorrt

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=(), opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name, value, dtype=None):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def support(m, dla=False, gpu_fallback=False, trt_major=10, **kw):
    return {n.name: (n.runs_on, n.reason) for n in check_tensorrt(m, dla=dla, gpu_fallback=gpu_fallback, trt_major=trt_major, **kw)}


def one_node(op, inputs, inits=(), shape=(1, 4), **attrs):
    node = helper.make_node(op, inputs, ["y"], name="n", **attrs)
    return model([node], [vi("x", list(shape))], [vi("y", None)], inits)


# ---------------------------------------------------------------- TensorRT's ONNX parser


@pytest.mark.parametrize("op", ["QLinearConv", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "Unique", "DFT",
                                "SequenceConstruct", "OptionalHasElement", "StringNormalizer", "BitwiseAnd"])
def test_unsupported_ops(op):
    runs_on, reason = support(one_node(op, ["x"]))["n"]
    assert runs_on == "unsupported" and op in reason


@pytest.mark.parametrize("domain, op", [("com.microsoft", "Attention"), ("com.microsoft", "SkipLayerNormalization"),
                                        ("com.microsoft", "QLinearAdd"), ("my.plugins", "Fancy")])
def test_custom_domains_need_a_plugin(domain, op):
    node = helper.make_node(op, ["x"], ["y"], name="n", domain=domain)
    m = model([node], [vi("x", [1])], [vi("y", None)])
    m.opset_import.append(helper.make_opsetid(domain, 1))
    runs_on, reason = support(m)["n"]
    assert runs_on == "unsupported" and reason.startswith(f"'{domain}::{op}'")
    if domain == "com.microsoft":
        assert "ONNX Runtime contrib op" in reason and "no importer" in reason
    else:
        assert "would need a plugin" in reason


@pytest.mark.parametrize("opset", [8, 21])
def test_opset_outside_9_to_20_makes_every_node_unsupported(opset):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="a"), helper.make_node("Relu", ["r"], ["y"], name="b")]
    result = support(model(nodes, [vi("x", [1])], [vi("y", [1])], opset=opset))
    assert {k: v[0] for k, v in result.items()} == {"a": "unsupported", "b": "unsupported"}
    assert f"opset {opset} is outside the 9-20" in result["a"][1]


def test_supported_graph_runs_on_the_gpu():
    m = one_node("Relu", ["x"])
    assert support(m) == {"n": ("accelerator", "")}


@pytest.mark.parametrize("op, axes_input", [("Slice", ["x", "s", "e", "ax"]), ("Squeeze", ["x", "ax"]),
                                            ("Unsqueeze", ["x", "ax"]), ("ReduceSum", ["x", "ax"]), ("ReduceMax", ["x", "ax"])])
def test_axes_must_be_constant(op, axes_input):
    inits = [const("s", [0], np.int64), const("e", [1], np.int64)]
    graph_axes = model([helper.make_node(op, axes_input, ["y"], name="n")], [vi("x", [1, 4]), vi("ax", [1], TensorProto.INT64)],
                       [vi("y", None)], inits)
    runs_on, reason = support(graph_axes)["n"]  # TensorRT 10.0: the oldest 10.x
    assert runs_on == "unsupported" and reason.startswith(f"{op}'s axes input 'ax' must be an initializer (constant) for TensorRT")
    init_axes = one_node(op, axes_input, inits + [const("ax", [0], np.int64)])
    assert support(init_axes)["n"][0] == "accelerator"


@pytest.mark.parametrize("op, axes_input, takes_tensor_from", [("Slice", ["x", "s", "e", "ax"], (10, 3)),
                                                              ("Squeeze", ["x", "ax"], (10, 7)),
                                                              ("Unsqueeze", ["x", "ax"], (10, 7))])
def test_later_releases_take_tensor_axes(op, axes_input, takes_tensor_from):
    inits = [const("s", [0], np.int64), const("e", [1], np.int64)]
    m = model([helper.make_node(op, axes_input, ["y"], name="n")], [vi("x", [1, 4]), vi("ax", [1], TensorProto.INT64)],
              [vi("y", None)], inits)
    release = f"TensorRT {takes_tensor_from[0]}.{takes_tensor_from[1]} takes a tensor"
    assert release in support(m, trt_version=(10, takes_tensor_from[1] - 1))["n"][1]
    assert support(m, trt_version=takes_tensor_from)["n"] == ("accelerator", "")
    assert support(m, trt_major=11)["n"] == ("accelerator", "")


def test_ops_added_in_later_releases():
    stft = model([helper.make_node("STFT", ["x", "step"], ["y"], name="n")], [vi("x", [1, 64, 1])], [vi("y", None)],
                 [const("step", 8, np.int64)], opset=17)
    assert support(stft)["n"] == ("unsupported", "TensorRT's ONNX parser takes STFT from TensorRT 10.5 on")
    assert support(stft, trt_version=(10, 5))["n"] == ("accelerator", "")
    attention = model([helper.make_node("Attention", ["q", "k", "v"], ["y"], name="n")],
                      [vi("q", [1, 2, 4, 8]), vi("k", [1, 2, 4, 8]), vi("v", [1, 2, 4, 8])], [vi("y", None)], opset=23)
    assert "opset 23 is outside the 9-20" in support(attention)["n"][1]  # ONNX Attention is opset 23
    assert support(attention, trt_major=11)["n"] == ("accelerator", "")


@pytest.mark.parametrize("op, dtype, ok", [("MatMul", TensorProto.INT64, False), ("MatMul", TensorProto.FLOAT16, True),
                                          ("Softmax", TensorProto.INT32, False), ("Erf", TensorProto.INT64, False),
                                          ("Add", TensorProto.INT64, True), ("Equal", TensorProto.INT64, True),
                                          ("Not", TensorProto.BOOL, True), ("Not", TensorProto.FLOAT, False),
                                          ("Identity", TensorProto.UINT16, False)])
def test_parser_types(op, dtype, ok):
    inputs = ["x", "x"] if op in ("MatMul", "Add", "Equal") else ["x"]
    m = model([helper.make_node(op, inputs, ["y"], name="n")], [vi("x", [2, 2], dtype)], [vi("y", None)])
    runs_on, reason = support(m)["n"]
    assert (runs_on == "accelerator") == ok, reason
    if not ok:
        assert TensorProto.DataType.Name(dtype) in reason


def test_gather_and_where_take_no_uint8_and_cast_targets():
    gather = model([helper.make_node("Gather", ["table", "ids"], ["y"], name="n")],
                   [vi("table", [10, 4], TensorProto.UINT8), vi("ids", [3], TensorProto.INT64)], [vi("y", None)])
    assert support(gather)["n"] == ("unsupported", "TensorRT's Gather does not take UINT8 input 'table'")
    embedding = model([helper.make_node("Gather", ["table", "ids"], ["y"], name="n")],
                      [vi("ids", [1, 3], TensorProto.INT64)], [vi("y", None)], [const("table", np.ones((10, 4)), np.float32)])
    assert support(embedding)["n"] == ("accelerator", "")
    for to, ok in ((TensorProto.BOOL, True), (TensorProto.INT64, True), (TensorProto.INT16, False), (TensorProto.INT8, False)):
        cast = one_node("Cast", ["x"], to=to)
        assert (support(cast)["n"][0] == "accelerator") == ok


def test_transformer_op_restrictions():
    ln = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean"], name="n", axis=-1)
    gb = [const("g", np.ones(4), np.float32), const("b", np.zeros(4), np.float32)]
    used = model([ln, helper.make_node("Identity", ["mean"], ["m"], name="i")], [vi("x", [1, 4])], [vi("y", None), vi("m", None)], gb)
    assert "only the first output Y" in support(used)["n"][1]
    unused = model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="n", axis=-1)], [vi("x", [1, 4])],
                   [vi("y", None)], gb)
    assert support(unused)["n"] == ("accelerator", "")
    mixed = model([helper.make_node("Range", ["s", "l", "d"], ["y"], name="n")], [vi("l", [], TensorProto.INT64)], [vi("y", None)],
                  [const("s", 0, np.int32), const("d", 1, np.int64)])
    assert "one type" in support(mixed)["n"][1]
    diagonal = model([helper.make_node("Einsum", ["x"], ["y"], name="n", equation="ii->i")], [vi("x", [3, 3])], [vi("y", None)])
    assert "diagonal" in support(diagonal)["n"][1] and support(diagonal, trt_version=(10, 12))["n"][0] == "accelerator"
    training = model([helper.make_node("Dropout", ["x", "r", "t"], ["y"], name="n")], [vi("x", [1, 4])], [vi("y", None)],
                     [const("r", 0.1, np.float32), const("t", True, np.bool_)])
    assert "training_mode" in support(training)["n"][1]


def test_cumsum_axis_and_type():
    m = model([helper.make_node("CumSum", ["x", "ax"], ["y"], name="n")], [vi("x", [1, 4]), vi("ax", [], TensorProto.INT64)],
              [vi("y", None)])
    assert "axes input 'ax' must be an initializer" in support(m)["n"][1]
    assert support(m, trt_version=(10, 8))["n"] == ("accelerator", "")
    ints = model([helper.make_node("CumSum", ["x", "ax"], ["y"], name="n")], [vi("x", [1, 4], TensorProto.INT64)],
                 [vi("y", None)], [const("ax", 1, np.int64)])
    assert "takes FP32/FP16/BF16 only" in support(ints)["n"][1]


def test_axes_from_a_constant_node_count_as_constant():
    nodes = [helper.make_node("Constant", [], ["ax"], name="c", value=const("v", [0], np.int64)),
             helper.make_node("Unsqueeze", ["x", "ax"], ["y"], name="n")]
    assert support(model(nodes, [vi("x", [4])], [vi("y", None)]))["n"][0] == "accelerator"


def test_topk_rules():
    k = [const("k", [5], np.int64)]
    assert support(one_node("TopK", ["x", "k"], k))["n"][0] == "accelerator"
    assert support(one_node("TopK", ["x", "k"], k, sorted=0))["n"] == ("unsupported", "TensorRT's TopK needs sorted=1")
    assert "K < 3840; K is 4000" in support(one_node("TopK", ["x", "k"], [const("k", [4000], np.int64)]))["n"][1]
    m = model([helper.make_node("TopK", ["x", "kk"], ["y", "i"], name="n")], [vi("x", [9]), vi("kk", [1], TensorProto.INT64)],
              [vi("y", None)])
    assert "K is not a constant" in support(m)["n"][1]
    opset9 = model([helper.make_node("TopK", ["x"], ["y", "i"], name="n", k=4000)], [vi("x", [9])], [vi("y", None)], opset=9)
    assert "K is 4000" in support(opset9)["n"][1]


def test_resize_rules():
    inputs = ["x", "", "sc"]
    scales = [const("sc", [1, 1, 2, 2], np.float32)]
    shape = (1, 1, 4, 4)
    assert support(one_node("Resize", inputs, scales, shape, mode="linear"))["n"][0] == "accelerator"
    assert "not cubic" in support(one_node("Resize", inputs, scales, shape, mode="cubic"))["n"][1]
    assert "antialias" in support(one_node("Resize", inputs, scales, shape, mode="linear", antialias=1))["n"][1]


def test_pooling_rules():
    shape = (1, 1, 4, 4)
    assert support(one_node("MaxPool", ["x"], (), shape, kernel_shape=[2, 2]))["n"][0] == "accelerator"
    assert "dilations" in support(one_node("MaxPool", ["x"], (), shape, kernel_shape=[2, 2], dilations=[2, 2]))["n"][1]
    assert "2D or 3D" in support(one_node("AveragePool", ["x"], (), (1, 1, 4), kernel_shape=[2]))["n"][1]


# ---------------------------------------------------------------- Q/DQ


def qdq(zp_value=0, zp_dtype=np.int8, zp_as_input=False):
    inits = [const("s", 0.1, np.float32)] + ([] if zp_as_input else [const("zp", zp_value, zp_dtype)])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], name="dq"),
             helper.make_node("Relu", ["d"], ["y"], name="relu")]
    inputs = [vi("x", [1, 4])] + ([vi("zp", [], TensorProto.INT8)] if zp_as_input else [])
    return model(nodes, inputs, [vi("y", [1, 4])], inits)


def test_symmetric_int8_qdq_is_supported():
    assert {k: v[0] for k, v in support(qdq()).items()} == {"q": "accelerator", "dq": "accelerator", "relu": "accelerator"}
    assert check_qdq_symmetric(qdq()) == []


def test_nonzero_zero_point():
    m = qdq(zp_value=3)
    assert support(m)["q"] == ("unsupported", "zero point must be 0 (symmetric quantization); 'zp' holds [3]")
    assert check_qdq_symmetric(m) == ["q", "dq"]


def test_zero_point_that_is_not_a_constant():
    m = qdq(zp_as_input=True)
    assert "is not a constant" in support(m)["q"][1]
    assert check_qdq_symmetric(m) == ["q", "dq"]


def test_uint8_only_at_the_network_boundary():
    inside = qdq(zp_value=0, zp_dtype=np.uint8)
    assert "UINT8 Q/DQ inside the network" in support(inside)["q"][1]
    # a DequantizeLinear that reads a UINT8 network input is allowed
    m = model([helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["y"], name="dq")], [vi("x", [1, 4], TensorProto.UINT8)],
              [vi("y", [1, 4])], [const("s", 0.1, np.float32), const("zp", 0, np.uint8)])
    assert support(m)["dq"] == ("accelerator", "")
    # QuantizeLinear without zero point and output_dtype produces UINT8
    no_zp = model([helper.make_node("QuantizeLinear", ["x", "s"], ["q"], name="q"),
                   helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")],
                  [vi("x", [4])], [vi("y", [4])], [const("s", 0.1, np.float32)])
    assert "UINT8" in support(no_zp)["q"][1]


def test_int32_bias_dequantize_is_unsupported():
    m = model([helper.make_node("DequantizeLinear", ["b", "s"], ["bf"], name="dq_bias"),
               helper.make_node("Add", ["x", "bf"], ["y"], name="add")],
              [vi("x", [4])], [vi("y", [4])], [const("b", [1, 2, 3, 4], np.int32), const("s", 0.01, np.float32)])
    runs_on, reason = support(m)["dq_bias"]
    assert runs_on == "unsupported" and "QuantizeBias=False" in reason


# ---------------------------------------------------------------- DLA


def test_dla_native_and_not_native_ops():
    m = model([helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Exp", ["r"], ["e"], name="exp"),
               helper.make_node("Erf", ["e"], ["f"], name="erf"), helper.make_node("Trilu", ["f"], ["y"], name="trilu")],
              [vi("x", [1, 4])], [vi("y", [1, 4])])
    with_fallback = support(m, dla=True, gpu_fallback=True)
    assert with_fallback["relu"] == ("accelerator", "")
    assert with_fallback["exp"] == ("fallback", "Exp does not run on DLA")
    assert with_fallback["erf"] == ("fallback", "Erf: DLA's activations are ReLU, Sigmoid, TanH, LeakyReLU and Clip only")
    assert with_fallback["trilu"] == ("fallback", "Trilu is not among DLA's native layers")
    without = support(m, dla=True, gpu_fallback=False)
    assert without["exp"] == ("unsupported", "Exp does not run on DLA, and GPU fallback is off")


@pytest.mark.parametrize("op", ["Exp", "Log", "Sqrt", "HardSwish", "GlobalAveragePool", "ReduceMean"])
def test_not_on_dla(op):
    assert support(one_node(op, ["x"], (), (1, 1, 2, 2)), dla=True, gpu_fallback=True)["n"] == ("fallback", f"{op} does not run on DLA")


@pytest.mark.parametrize("op, reason", [("LayerNormalization", "normalization layer"), ("Gelu", "DLA's activations"),
                                        ("Gather", "gather layer"), ("Where", "select layer"), ("Cast", "cast layer")])
def test_transformer_layers_fall_back_from_dla(op, reason):
    if op == "LayerNormalization":
        m = one_node(op, ["x", "g"], [const("g", np.ones(4), np.float32)])
    elif op == "Gather":
        m = model([helper.make_node(op, ["x", "i"], ["y"], name="n")], [vi("x", [1, 4])], [vi("y", None)], [const("i", [0, 2], np.int64)])
    elif op == "Where":
        m = model([helper.make_node(op, ["c", "x", "x"], ["y"], name="n")], [vi("c", [1, 4], TensorProto.BOOL), vi("x", [1, 4])],
                  [vi("y", None)])
    else:
        m = model([helper.make_node(op, ["x"], ["y"], name="n", **({"to": TensorProto.FLOAT16} if op == "Cast" else {}))],
                  [vi("x", [1, 4])], [vi("y", None)], opset=20)
    runs_on, why = support(m, dla=True, gpu_fallback=True)["n"]
    assert runs_on == "fallback" and why.startswith(f"{op}: ") and reason in why


def test_dla_elementwise_conditions():
    """TensorRT 10.3 ElementWise "DLA Support": Pow needs exactly one constant input; Div, Min run."""
    two = model([helper.make_node("Div", ["x", "z"], ["d"], name="div"), helper.make_node("Min", ["d", "z"], ["m"], name="min"),
                 helper.make_node("Pow", ["m", "z"], ["p"], name="pow"), helper.make_node("Pow", ["p", "two"], ["y"], name="sq")],
                [vi("x", [1, 4]), vi("z", [1, 4])], [vi("y", None)], [const("two", 2.0, np.float32)])
    result = support(two, dla=True, gpu_fallback=True)
    assert result["div"] == result["min"] == result["sq"] == ("accelerator", "")
    assert result["pow"] == ("fallback", "DLA's Pow needs exactly one constant input")


@pytest.mark.parametrize("shape, axis, ok", [((1, 2, 128, 128), -1, True), ((1, 2, 128, 2048), -1, False),
                                             ((1, 1, 1, 5000), -1, True), ((2, 2, 4, 4), 0, False), ((1, 2, 8), 2, True)])
def test_dla_softmax_limits(shape, axis, ok):
    runs_on, reason = support(one_node("Softmax", ["x"], (), shape, axis=axis), dla=True, gpu_fallback=True)["n"]
    assert (runs_on == "accelerator") == ok, reason


def test_dla_concatenates_channels_only():
    def concat(axis):
        return model([helper.make_node("Concat", ["a", "b"], ["y"], name="n", axis=axis)],
                     [vi("a", [1, 2, 3, 16]), vi("b", [1, 2, 3, 16])], [vi("y", None)])

    assert support(concat(1), dla=True)["n"] == ("accelerator", "")
    runs_on, reason = support(concat(2), dla=True, gpu_fallback=True)["n"]
    assert runs_on == "fallback" and "KV-cache Concat joins the sequence axis" in reason


def test_dla_folds_shape_arithmetic_and_refuses_int64_tensors():
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"), helper.make_node("Gather", ["s", "i"], ["g"], name="gather"),
             helper.make_node("Unsqueeze", ["mask", "ax"], ["u"], name="unsqueeze"),
             helper.make_node("Cast", ["u"], ["c"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "c"], ["y"], name="mul")]
    m = model(nodes, [vi("x", [1, 4]), vi("mask", [4], TensorProto.INT64)], [vi("y", None), vi("g", None)],
              [const("i", 1, np.int64), const("ax", [0], np.int64)])
    result = support(m, dla=True, gpu_fallback=True)
    assert result["shape"][0] == result["gather"][0] == "accelerator" and "folds it into a constant" in result["gather"][1]
    assert result["unsqueeze"] == ("fallback", "DLA computes in INT8/FP16 only; 'mask' is INT64")
    assert result["cast"][0] == "fallback" and result["mul"] == ("accelerator", "")


def test_dla_clip_and_empty_tensors():
    relu6 = one_node("Clip", ["x", "lo", "hi"], [const("lo", 0.0, np.float32), const("hi", 6.0, np.float32)], (1, 1, 2, 2))
    assert support(relu6, dla=True)["n"] == ("accelerator", "")
    wide = one_node("Clip", ["x", "lo", "hi"], [const("lo", -1.0, np.float32), const("hi", 1.0, np.float32)], (1, 1, 2, 2))
    assert "min 0 and max <= 127" in support(wide, dla=True, gpu_fallback=True)["n"][1]
    empty = one_node("Relu", ["x"], (), (1, 2, 0, 16))
    assert "DLA runs no empty tensors" in support(empty, dla=True, gpu_fallback=True)["n"][1]


def test_dla_matmul_needs_constant_weights():
    weights = model([helper.make_node("DequantizeLinear", ["wq", "s"], ["w"], name="dq_w"),
                     helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                    [vi("x", [1, 4])], [vi("y", [1, 2])], [const("wq", np.ones((4, 2)), np.int8), const("s", 0.1, np.float32)])
    assert support(weights, dla=True)["mm"] == ("accelerator", "")
    activations = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", [1, 4]), vi("w", [4, 2])], [vi("y", [1, 2])])
    assert "constant second input" in support(activations, dla=True, gpu_fallback=True)["mm"][1]


def test_dla_needs_static_shapes_unless_the_build_pins_them():
    m = model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", ["N", 4])], [vi("y", ["N", 4])])
    runs_on, reason = support(m, dla=True, gpu_fallback=True)["relu"]
    assert runs_on == "fallback" and "input 'x' has dynamic dims (Nx4)" in reason
    assert support(m, dla=True, input_shapes={"x": (1, 4)})["relu"] == ("accelerator", "")
    assert support(m, dla=False)["relu"] == ("accelerator", "")


def test_qdq_nodes_are_absorbed_on_dla():
    result = support(qdq(), dla=True)
    assert result["q"] == ("accelerator", "") and result["dq"] == ("accelerator", "")


def test_trt11_dla_needs_low_precision_around_a_node():
    plain = one_node("Relu", ["x"])
    assert "strongly typed" in support(plain, dla=True, gpu_fallback=True, trt_major=11)["n"][1]
    assert support(plain, dla=True, trt_major=10)["n"] == ("accelerator", "")
    assert support(qdq(), dla=True, trt_major=11)["relu"] == ("accelerator", "")  # reads a DequantizeLinear output


# ---------------------------------------------------------------- a real QDQ model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("rules") / "fp32.onnx"
    torch.onnx.export(Tiny().eval(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=True, opset_version=18,
                      input_names=["x"], dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    return path


def quantize(fp32: Path, name: str, **kw) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    out = fp32.with_name(name)
    args = {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8, **kw}
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, **args)
    return onnx.load(str(out))


def test_real_symmetric_qdq_model(exported: Path):
    m = quantize(exported, "sym.onnx", extra_options={"ActivationSymmetric": True, "QuantizeBias": False})
    assert check_qdq_symmetric(m) == []
    gpu = check_tensorrt(m, dla=False, gpu_fallback=False, trt_major=10)
    assert {n.runs_on for n in gpu} == {"accelerator"} and any(n.op_type == "QuantizeLinear" for n in gpu)
    dla = check_tensorrt(m, dla=True, gpu_fallback=True, trt_major=10, input_shapes={"x": (1, 3, 16, 16)})
    off = {n.op_type for n in dla if n.runs_on != "accelerator"}
    assert off == {"ReduceMean"}  # adaptive_avg_pool2d exports as ReduceMean, which DLA does not run
    assert all(n.runs_on == "accelerator" for n in dla if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Conv", "Relu", "Gemm"))


def test_real_default_qdq_model_is_flagged(exported: Path):
    # onnxruntime's defaults: asymmetric UINT8 activations and INT32 quantized biases
    from onnxruntime.quantization import QuantType

    m = quantize(exported, "asym.onnx", activation_type=QuantType.QUInt8)
    assert "x_QuantizeLinear" in check_qdq_symmetric(m)
    reasons = [n.reason for n in check_tensorrt(m, dla=False, gpu_fallback=False, trt_major=10) if n.runs_on == "unsupported"]
    assert any("zero point must be 0" in r for r in reasons) and any("INT32 DequantizeLinear" in r for r in reasons)
