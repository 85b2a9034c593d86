"""The x86 targets cost the graph ONNX Runtime itself runs ([device] runtime_graph), and the device
figures added for real models: per-class stream efficiency, weights read from DRAM when they do not
fit the cache."""
from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from edgekd.analysis.device import DeviceModel, HostCpu, read_host_cpu
from edgekd.analysis.estimate import estimate
from edgekd.config.loading import ConfigSearch, load_target

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

GPU = {"name": "gpu", "peak_tops": {"int8": 80.0, "fp16": 40.0}, "memory_bandwidth_gbs": 200.0,
       "compute_efficiency": {"default": 0.5}, "bandwidth_efficiency": 0.8, "layer_overhead_us": 0.0}
HOST = HostCpu(cores=2, logical_cpus=2, clock_mhz=2500.0, cache_mb=32.0)


def x86() -> DeviceModel:
    return load_target("x86-avx2", ConfigSearch()).config.device


def relu_conv(channels: int = 64, hw: int = 16) -> "onnx.ModelProto":
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"], name="sigmoid"), helper.make_node("Mul", ["s", "c"], ["y"], name="mul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_x86_costs_the_graph_onnxruntime_runs(zoo, tmp_path) -> None:
    """INT8 DistilBERT on x86: ONNX Runtime keeps Q/DQ nodes and fp32 MatMuls, and they are costed."""
    from edgekd.config.models import QuantizeConfig
    from edgekd.graph.feeds import random_feedset
    from edgekd.graph.quantize import quantize_int8
    from edgekd.graph.resolve import load_inputs

    fp32 = zoo("distilbert", "optimum")
    inputs = load_inputs(fp32)
    int8 = tmp_path / "model_int8.onnx"
    quantize_int8(fp32, int8, random_feedset(inputs, 2).arrays, QuantizeConfig(calibration_samples=2),
                  load_target("x86-avx2", ConfigSearch()).config.quantize)
    est = estimate(int8, x86(), precision="int8", inputs=inputs, host=HOST)
    assert any(a.startswith("costed: the graph ONNX Runtime") for a in est.assumptions)
    assert est.fusions == {}  # ONNX Runtime did its fusions itself
    ops = {r["op_type"] for r in est.per_node}
    assert "QLinearMatMul" in ops and "MatMul" in ops  # integer and float MatMuls side by side
    dq = [r for r in est.per_node if r["op_type"] == "DequantizeLinear"]
    assert len(dq) > 20 and all(r["ms"] > 0 for r in dq)  # every Q/DQ ONNX Runtime keeps runs
    float_mm = [r for r in est.per_node if r["op_type"] == "MatMul" and r["macs"]]
    assert float_mm and all(r["precision"] == "fp32" for r in float_mm)
    assert all("precision" not in r for r in est.per_node if r["op_type"] == "QLinearMatMul")  # int8, as asked
    assert not est.unknown_shapes
    fp = estimate(fp32, x86(), precision="fp32", inputs=inputs, host=HOST)
    assert "BiasGelu" in {r["op_type"] for r in fp.per_node}  # ONNX Runtime's own GELU fusion


def test_a_model_onnxruntime_cannot_load_falls_back_to_the_exported_graph() -> None:
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["a"], name="relu_in"), n("Mystery", ["a"], ["b"], name="mystery", domain="com.example"),
             n("Relu", ["b"], ["y"], name="relu_out")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    est = estimate(model, x86(), precision="fp32", host=HOST)
    assert any("but ONNX Runtime cannot optimize the model" in a for a in est.assumptions)
    assert {u["node"] for u in est.unknown_shapes} == {"mystery", "relu_out"}


def test_stream_efficiency_per_class() -> None:
    model = relu_conv()
    base = estimate(model, DeviceModel.model_validate(GPU), precision="fp16")
    slow = estimate(model, DeviceModel.model_validate({**GPU, "stream_efficiency": {"activation": 0.08}}), precision="fp16")
    swish = lambda est: next(r for r in est.per_node if r.get("kernel") == "Swish (fused)")  # noqa: E731
    assert swish(slow)["memory_ms"] == pytest.approx(10 * swish(base)["memory_ms"])
    conv = lambda est: next(r for r in est.per_node if r["name"] == "conv")  # noqa: E731
    assert conv(slow)["memory_ms"] == pytest.approx(conv(base)["memory_ms"])  # other classes keep bandwidth_efficiency


def test_weights_beyond_the_cache_come_from_dram() -> None:
    model = relu_conv(channels=64)  # 64 x 64 x 3 x 3 fp16 weights: 73.7 kB
    fits = estimate(model, DeviceModel.model_validate({**GPU, "cache_mb": 1.0, "dram_bandwidth_gbs": 10.0}), precision="fp16")
    spills = estimate(model, DeviceModel.model_validate({**GPU, "cache_mb": 0.01, "dram_bandwidth_gbs": 10.0}), precision="fp16")
    conv_fits = next(r for r in fits.per_node if r["name"] == "conv")
    conv_spills = next(r for r in spills.per_node if r["name"] == "conv")
    acts, weights = 2 * 2 * 64 * 16 * 16, 2 * 64 * 64 * 9
    assert conv_fits["memory_ms"] == pytest.approx((acts + weights) / (200e9 * 0.8) * 1e3)
    assert conv_spills["memory_ms"] == pytest.approx((acts / (200e9 * 0.8) + weights / (10e9 * 0.8)) * 1e3)
    assert any("fit the 1 MB cache" in a for a in fits.assumptions)
    assert any("exceed the 0.01 MB cache: read from DRAM" in a for a in spills.assumptions)


def test_host_relative_dram_and_cache_from_the_host() -> None:
    x86_like = {"name": "cpu", "host_relative": True, "peak_ops_per_cycle_per_core": {"fp32": 32},
                "memory_bandwidth_bytes_per_cycle_per_core": 32, "compute_efficiency": {"default": 0.5},
                "bandwidth_efficiency": 0.5, "layer_overhead_us": 0.0, "dram_bandwidth_bytes_per_cycle_per_core": 4}
    est = estimate(relu_conv(), DeviceModel.model_validate(x86_like), precision="fp32",
                   host=HostCpu(cores=2, logical_cpus=2, clock_mhz=2000.0, cache_mb=0.05))
    assert any(a.startswith("[device] dram_bandwidth_bytes_per_cycle_per_core = 4 -> 16 GB/s") for a in est.assumptions)
    assert any("exceed the 0.05 MB cache" in a for a in est.assumptions)
    host = read_host_cpu() if __import__("os").path.exists("/proc/cpuinfo") else HOST
    assert host.cache_mb is None or host.cache_mb > 0


CPU = {"name": "cpu", "host_relative": True, "peak_ops_per_cycle_per_core": {"fp32": 32},
       "memory_bandwidth_bytes_per_cycle_per_core": 32, "compute_efficiency": {"default": 0.5},
       "bandwidth_efficiency": 0.5, "layer_overhead_us": 0.0}


@pytest.mark.parametrize("base, overrides, message", [
    (CPU, {"dram_bandwidth_gbs": 10.0, "dram_bandwidth_bytes_per_cycle_per_core": 4}, "give one of"),
    (GPU, {"dram_bandwidth_bytes_per_cycle_per_core": 4}, "only apply with host_relative"),
    (GPU, {"stream_efficiency": {"activation": 1.5}}, "stream_efficiency values must be in"),
    (GPU, {"runtime_graph": "tensorrt"}, "runtime_graph"),
])
def test_device_validation(base: dict, overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeviceModel.model_validate({**base, **overrides})
