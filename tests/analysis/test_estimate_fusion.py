"""edgekd.analysis.fusion on hand-built graphs (the decomposed LayerNorm of older exports, a model
whose shapes cannot be found) and on a Q/DQ transformer (fusions found through the Q/DQ pairs)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekd.analysis.device import DeviceModel
from edgekd.analysis.estimate import estimate
from edgekd.analysis.graph import graph_costs

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

GPU = {"name": "gpu", "peak_tops": {"int8": 80.0, "fp16": 40.0, "fp32": 10.0}, "memory_bandwidth_gbs": 200.0,
       "compute_efficiency": {"default": 0.5}, "bandwidth_efficiency": 0.8, "layer_overhead_us": 5.0}


def _model(nodes: list, inits: list, dims: list, opset: int = 18, domains: tuple = ()) -> "onnx.ModelProto":
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports)


def decomposed_layernorm(hidden: int = 64) -> "onnx.ModelProto":
    """x -> MatMul -> LayerNorm written out as torch.onnx opset <17 writes it -> MatMul -> y."""
    rng = np.random.default_rng(0)
    f = lambda name, value: numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)  # noqa: E731
    inits = [f("w1", rng.standard_normal((hidden, hidden))), f("w2", rng.standard_normal((hidden, hidden))),
             f("two", 2.0), f("eps", 1e-5), f("gamma", np.ones(hidden)), f("beta", np.zeros(hidden)),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes")]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["h"], name="mm1"),
             n("ReduceMean", ["h", "axes"], ["mean"], name="mean"), n("Sub", ["h", "mean"], ["d"], name="sub"),
             n("Pow", ["d", "two"], ["sq"], name="pow"), n("ReduceMean", ["sq", "axes"], ["var"], name="var"),
             n("Add", ["var", "eps"], ["ve"], name="add_eps"), n("Sqrt", ["ve"], ["std"], name="sqrt"),
             n("Div", ["d", "std"], ["norm"], name="div"), n("Mul", ["norm", "gamma"], ["scaled"], name="gamma"),
             n("Add", ["scaled", "beta"], ["ln"], name="beta"), n("MatMul", ["ln", "w2"], ["y"], name="mm2")]
    return _model(nodes, inits, ["batch", 16, hidden])


def test_decomposed_layernorm_is_one_norm_pass() -> None:
    model = decomposed_layernorm()
    est = estimate(model, DeviceModel.model_validate(GPU), precision="fp16")
    assert est.fusions == {"layernorm": 1}
    rows = {r["name"]: r for r in est.per_node}
    assert rows["mean"]["kernel"] == "LayerNorm (fused)" and rows["mean"]["op_class"] == "norm"
    members = ("sub", "pow", "var", "add_eps", "sqrt", "div", "gamma", "beta")
    assert all(rows[m]["note"] == "fused into mean" and rows[m]["ms"] == 0 for m in members)
    assert sum(r["bound"] != "fused" for r in est.per_node) == 3  # mm1, the norm, mm2
    # one pass: reads h and writes ln (16 x 64 each, fp16) plus gamma and beta, nothing in between
    assert rows["mean"]["bytes_moved"] == 2 * (2 * 16 * 64) + 2 * (64 + 64 + 1 + 1 + 1 + 1)


def test_unknown_shapes_are_listed_not_raised() -> None:
    """A custom-domain op neither onnx nor ONNX Runtime knows: its output shape stays unknown."""
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["a"], name="relu_in"), n("Mystery", ["a"], ["b"], name="mystery", domain="com.example"),
             n("Relu", ["b"], ["y"], name="relu_out")]
    model = _model(nodes, [], ["batch", 8], domains=("com.example",))
    costs = graph_costs(model)
    unknown = {u["node"]: u for u in costs.unknown}
    assert set(unknown) == {"mystery", "relu_out"}
    assert unknown["mystery"]["tensors"] == ["b"] and unknown["relu_out"]["tensors"] == ["b", "y"]
    est = estimate(model, DeviceModel.model_validate(GPU), precision="fp16")
    assert {u["node"] for u in est.unknown_shapes} == {"mystery", "relu_out"}
    assert est.latency_ms > 0
    assert any("2 node(s) with tensors of unknown shape" in a and "mystery (Mystery)" in a for a in est.assumptions)
    mystery = next(r for r in est.per_node if r["name"] == "mystery")
    assert "shape unknown: b" in mystery["note"]
    relu_in = next(r for r in est.per_node if r["name"] == "relu_in")
    assert relu_in["bytes_moved"] == 2 * 8 * 2  # known shapes are still costed


def test_fusions_are_found_through_qdq_pairs(zoo, tmp_path) -> None:
    """The INT8 Q/DQ graph of DistilBERT: attention (on a device that fuses it), GELU and the bias
    Adds are fused as in the float graph; the Q/DQ pairs between them cost nothing."""
    from edgekd.config.loading import ConfigSearch, load_target
    from edgekd.config.models import QuantizeConfig
    from edgekd.graph.feeds import random_feedset
    from edgekd.graph.quantize import quantize_int8
    from edgekd.graph.resolve import load_inputs

    fp32 = zoo("distilbert", "optimum")
    inputs = load_inputs(fp32)
    int8 = tmp_path / "model_int8.onnx"
    recipe = load_target("jetson-orin-agx", ConfigSearch()).config.quantize
    quantize_int8(fp32, int8, random_feedset(inputs, 2).arrays, QuantizeConfig(calibration_samples=2), recipe)
    dev = DeviceModel.model_validate({**GPU, "fuse_attention": True})
    floats, ints = (estimate(p, dev, precision="int8", inputs=inputs) for p in (fp32, int8))
    assert ints.fusions["attention"] == floats.fusions["attention"] == 2
    assert ints.fusions["gelu"] == floats.fusions["gelu"] == 2
    assert ints.fusions.get("gemm+bias", 0) == floats.fusions["gemm+bias"]
    qdq = [r for r in ints.per_node if r["op_type"] in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 100 and sum(r["ms"] > 0 for r in qdq) <= 4  # only conversions at the graph boundary run
