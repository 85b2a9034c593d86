"""edgekd.analysis.estimate and edgekd.analysis.device: roofline behaviour on small hand-built ONNX
graphs (no torch, no export: fast), placement and fallback switches, and DeviceModel validation."""
from __future__ import annotations

import json
import typing

import numpy as np
import pytest
from pydantic import ValidationError

from edgekd.analysis.device import HostCpu, read_host_cpu
from edgekd.analysis.estimate import estimate
from edgekd.config.device import EFFICIENCY_KEYS, DeviceModel, EfficiencyKey

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

GPU = {"name": "gpu", "peak_tops": {"int8": 80.0, "fp16": 40.0}, "memory_bandwidth_gbs": 200.0,
       "compute_efficiency": {"default": 0.5}, "bandwidth_efficiency": 0.8, "layer_overhead_us": 0.0}


def device(**overrides: object) -> DeviceModel:
    return DeviceModel.model_validate({**GPU, **overrides})


def conv_chain(channels: int = 8, layers: int = 1, hw: int = 16, relu: bool = False) -> "onnx.ModelProto":
    """input [batch, channels, hw, hw] -> (Conv 3x3 same [-> Relu]) x layers -> Flatten."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "input"
    for i in range(layers):
        w = numpy_helper.from_array(rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [prev, w.name], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        prev = f"c{i}"
        if relu:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    nodes.append(helper.make_node("Flatten", [prev], ["out"], name="flatten"))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, hw, hw])]
    graph = helper.make_graph(nodes, "chain", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def qdq_conv() -> "onnx.ModelProto":
    """input -> Q -> DQ -> Conv(DQ(int8 weight)) -> Q -> DQ -> out, as onnxruntime.quantization lays it out."""
    f32, s8 = TensorProto.FLOAT, TensorProto.INT8
    inits = [helper.make_tensor("s", f32, [], [0.1]), helper.make_tensor("z", s8, [], [0]),
             numpy_helper.from_array(np.ones((4, 4, 3, 3), dtype=np.int8), "wq")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"], name="input_q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="input_dq"),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="weight_dq"),
             helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["yq"], name="out_q"),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["out"], name="out_dq")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", f32, ["batch", 4, 8, 8])],
                              [helper.make_tensor_value_info("out", f32, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


# ---------------------------------------------------------------- roofline behaviour


def test_latency_grows_with_macs() -> None:
    dev = device(layer_overhead_us=2.0)
    latencies = [estimate(conv_chain(channels=c), dev).latency_ms for c in (8, 16, 32, 64)]
    assert latencies == sorted(latencies) and latencies[0] < latencies[-1]
    assert estimate(conv_chain(layers=3), dev).latency_ms > estimate(conv_chain(layers=1), dev).latency_ms


def test_latency_falls_with_bandwidth_and_precision_bytes() -> None:
    model = conv_chain(channels=4, hw=64)  # few MACs per byte: memory-bound
    slow = estimate(model, device(memory_bandwidth_gbs=50.0))
    fast = estimate(model, device(memory_bandwidth_gbs=400.0))
    assert fast.latency_ms < slow.latency_ms
    assert slow.per_op_type["Conv"]["bound"] == "memory"
    assert estimate(model, device(), precision="fp16").latency_ms > estimate(model, device(), precision="int8").latency_ms


def test_roofline_arithmetic_and_bounds() -> None:
    model = conv_chain(channels=64, hw=32)
    est = estimate(model, device(layer_overhead_us=1.0, invoke_overhead_us=10.0), batch=2)
    conv = next(r for r in est.per_node if r["name"] == "conv0")
    macs = 2 * 64 * 32 * 32 * 64 * 9
    assert conv["macs"] == macs and conv["bound"] == "compute"
    assert conv["compute_ms"] == pytest.approx(2 * macs / (80e12 * 0.5) * 1e3)
    bytes_moved = 2 * 64 * 32 * 32 * 2 + 64 * 64 * 9  # int8: in + out + weight, 1 byte each
    assert conv["memory_ms"] == pytest.approx(bytes_moved / (200e9 * 0.8) * 1e3)
    assert conv["ms"] == pytest.approx(conv["compute_ms"] + 1e-3)
    assert est.latency_ms == pytest.approx(10e-3 + sum(r["ms"] for r in est.per_node))
    flatten = next(r for r in est.per_node if r["name"] == "flatten")  # a view: no data moves
    assert flatten["bound"] == "fused" and flatten["ms"] == 0 and flatten["note"].startswith("metadata only")
    assert est.per_op_type["Conv"] == {"ms": conv["ms"], "nodes": 1, "macs": macs, "bound": "compute"}
    tiny = estimate(conv_chain(channels=2, hw=4), device(layer_overhead_us=50.0))
    assert tiny.per_op_type["Conv"]["bound"] == "overhead"
    json.dumps(est.to_json())  # serializable as is


def test_activation_fuses_into_conv_unless_disabled() -> None:
    model = conv_chain(relu=True, layers=2)
    fused = estimate(model, device(layer_overhead_us=5.0))
    assert fused.per_op_type["Relu"]["bound"] == "fused" and fused.per_op_type["Relu"]["ms"] == 0
    unfused = estimate(model, device(layer_overhead_us=5.0, fuse_activations=False))
    assert unfused.per_op_type["Relu"]["ms"] > 0 and unfused.latency_ms > fused.latency_ms


def test_qdq_nodes_fold_away_except_at_the_graph_boundary() -> None:
    est = estimate(qdq_conv(), device(layer_overhead_us=1.0))
    by_name = {r["name"]: r for r in est.per_node}
    assert {n for n, r in by_name.items() if r["bound"] == "fused"} == {"input_dq", "weight_dq", "out_q"}
    assert by_name["input_q"]["ms"] > 0 and by_name["out_dq"]["ms"] > 0
    assert by_name["conv"]["memory_ms"] == pytest.approx((4 * 64 * 2 + 4 * 4 * 9) / (200e9 * 0.8) * 1e3)


# ---------------------------------------------------------------- placement and fallback


def _with_fallback(switch_us: float) -> DeviceModel:
    fallback = {**{k: v for k, v in GPU.items() if k != "name"}, "name": "cpu", "switch_overhead_us": switch_us}
    return device(fallback=fallback)


def test_each_transition_costs_switch_overhead() -> None:
    model = conv_chain(layers=4)
    dev = _with_fallback(switch_us=100.0)  # fallback figures equal the accelerator's: only switches differ
    base = estimate(model, dev)
    placement = {"conv1": "fallback", "conv3": "fallback"}  # a f a f (flatten is a view: not executed): 3 transitions
    split = estimate(model, dev, placement=placement)
    assert split.latency_ms - base.latency_ms == pytest.approx(3 * 0.1)
    assert sum(r["switch_ms"] > 0 for r in split.per_node) == 3
    assert {r["name"]: r["placement"] for r in split.per_node}["conv1"] == "fallback"
    assert any("3 accelerator<->fallback transitions" in a for a in split.assumptions)
    tail = estimate(model, dev, placement={"conv3": "fallback", "flatten": "fallback"})
    assert tail.latency_ms - base.latency_ms == pytest.approx(0.1)


def test_fallback_uses_its_own_figures() -> None:
    slow = {"name": "cpu", "peak_tops": {"int8": 1.0}, "memory_bandwidth_gbs": 20.0, "compute_efficiency": {"default": 0.5},
            "bandwidth_efficiency": 0.5, "layer_overhead_us": 0.0, "switch_overhead_us": 0.0}
    dev = device(fallback=slow)
    model = conv_chain(channels=32)
    assert estimate(model, dev, placement={"conv0": "fallback"}).latency_ms > 10 * estimate(model, dev).latency_ms


def test_placement_errors() -> None:
    model = conv_chain()
    with pytest.raises(ValueError, match="does not have"):
        estimate(model, _with_fallback(1.0), placement={"nope": "fallback"})
    with pytest.raises(ValueError, match="must be one of"):
        estimate(model, _with_fallback(1.0), placement={"conv0": "unsupported"})
    with pytest.raises(ValueError, match="no \\[device.fallback\\]"):
        estimate(model, device(), placement={"conv0": "fallback"})
    int8_only_fallback = device(fallback={**GPU, "peak_tops": {"int8": 1.0}, "switch_overhead_us": 0.0})
    with pytest.raises(ValueError, match="fallback 'gpu' has no peak for 'fp16'"):
        estimate(model, int8_only_fallback, precision="fp16", placement={"conv0": "fallback"})
    with pytest.raises(ValueError, match="no peak for 'fp32'"):
        estimate(model, device(), precision="fp32")


# ---------------------------------------------------------------- host-relative devices

X86 = {"name": "x86", "host_relative": True, "peak_ops_per_cycle_per_core": {"fp32": 32, "int8": 64},
       "memory_bandwidth_bytes_per_cycle_per_core": 32, "compute_efficiency": {"default": 0.5},
       "bandwidth_efficiency": 0.5, "layer_overhead_us": 3.0, "invoke_overhead_us": 15.0}


def test_host_relative_peak_scales_with_cores_and_clock() -> None:
    dev = DeviceModel.model_validate(X86)
    model = conv_chain(channels=64, hw=32)
    one = estimate(model, dev, precision="fp32", host=HostCpu(cores=1, logical_cpus=1, clock_mhz=2000.0))
    four = estimate(model, dev, precision="fp32", host=HostCpu(cores=4, logical_cpus=8, clock_mhz=2000.0))
    c1 = next(r for r in one.per_node if r["name"] == "conv0")["compute_ms"]
    c4 = next(r for r in four.per_node if r["name"] == "conv0")["compute_ms"]
    assert c1 == pytest.approx(4 * c4)
    assert c1 == pytest.approx(2 * 64 * 32 * 32 * 64 * 9 / (32 * 1 * 2e9 * 0.5) * 1e3)
    assert any(a.startswith("cores = 4") for a in four.assumptions)
    assert any(a.startswith("clock = 2000 MHz") for a in four.assumptions)
    fixed = DeviceModel.model_validate({**X86, "cores": 4, "clock_mhz": 2000.0})
    assert estimate(model, fixed, precision="fp32").latency_ms == pytest.approx(four.latency_ms)
    assert any("[device] cores" in a for a in estimate(model, fixed, precision="fp32").assumptions)


def test_read_host_cpu() -> None:
    import os

    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("Linux only")
    host = read_host_cpu()
    assert 1 <= host.cores <= host.logical_cpus and host.clock_mhz > 0


# ---------------------------------------------------------------- DeviceModel validation


@pytest.mark.parametrize("overrides, message", [
    ({"compute_efficiency": {"conv": 0.5}}, "needs a 'default' entry"),
    ({"compute_efficiency": {"default": 1.5}}, "must be in \\(0, 1\\]"),
    ({"compute_efficiency": {"default": 0.5, "convolution": 0.5}}, "compute_efficiency.convolution"),
    ({"bandwidth_efficiency": 0.0}, "greater than 0"),
    ({"peak_tops": {}}, "at least one precision"),
    ({"peak_tops": {"int4": 10.0}}, "peak_tops.int4"),
    ({"peak_tops": {"int8": -1.0}}, "must be > 0"),
    ({"memory_bandwidth_gbs": None}, "needs peak_tops and memory_bandwidth_gbs"),
    ({"cores": 4}, "only apply with host_relative"),
    ({"host_relative": True}, "takes peak_ops_per_cycle_per_core, not peak_tops"),
    ({"tops": 3}, "Extra inputs are not permitted"),
    ({"fallback": {**GPU, "switch_overhead_us": -1.0}}, "greater than or equal to 0"),
    ({"fallback": {**GPU}}, "switch_overhead_us"),
])
def test_device_validation_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        device(**overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"peak_ops_per_cycle_per_core": None}, "needs peak_ops_per_cycle_per_core"),
    ({"memory_bandwidth_gbs": 50.0}, "exactly one of memory_bandwidth_gbs"),
    ({"memory_bandwidth_bytes_per_cycle_per_core": None}, "exactly one of memory_bandwidth_gbs"),
])
def test_host_relative_validation_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DeviceModel.model_validate({**X86, **overrides})


def test_device_is_frozen_and_parses_a_toml_table() -> None:
    tomllib = pytest.importorskip("tomllib")
    table = tomllib.loads("""
name = "Jetson AGX Orin DLA"
peak_tops = { int8 = 26.25, fp16 = 13.1 }
memory_bandwidth_gbs = 204.8
compute_efficiency = { default = 0.3, conv = 0.6 }
bandwidth_efficiency = 0.7
layer_overhead_us = 10
[fallback]
name = "Jetson AGX Orin GPU"
peak_tops = { int8 = 85.2, fp16 = 42.6 }
memory_bandwidth_gbs = 204.8
compute_efficiency = { default = 0.5 }
bandwidth_efficiency = 0.7
layer_overhead_us = 5
switch_overhead_us = 100
""")
    dev = DeviceModel.model_validate(table)
    assert dev.fallback is not None and dev.fallback.switch_overhead_us == 100 and dev.precisions == ("fp16", "int8")
    with pytest.raises(ValidationError):
        dev.layer_overhead_us = 1.0  # type: ignore[misc]


def test_efficiency_keys_are_the_op_classes() -> None:
    assert set(typing.get_args(EfficiencyKey)) == set(EFFICIENCY_KEYS)
