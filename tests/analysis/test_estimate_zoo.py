"""The latency model on real architectures (edgekd.examples.zoo, tiny sizes, both exporters): every
model estimates on every shipped target, and the fusions, constant folding, embedding Gathers and
KV-cache traffic come out as the runtimes run them."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ZOO

from edgekd.analysis.estimate import estimate
from edgekd.analysis.graph import graph_costs
from edgekd.config.loading import ConfigSearch, load_target
from edgekd.graph.resolve import load_inputs

TARGETS = sorted(p.stem for p in (Path(__file__).parents[2] / "targets").glob("*.toml"))


def device(target: str):
    return load_target(target, ConfigSearch()).config.device


@pytest.mark.parametrize("arch, exporter", ZOO)
def test_every_zoo_model_estimates_on_every_target(zoo, arch: str, exporter: str) -> None:
    path = zoo(arch, exporter)
    inputs = load_inputs(path)
    for target in TARGETS:
        config = load_target(target, ConfigSearch()).config
        for precision in sorted(set(config.precisions) & set(config.device.precisions)):
            est = estimate(path, config.device, precision=precision, inputs=inputs)
            assert est.latency_ms > 0, (target, precision)
            assert not est.unknown_shapes, (target, est.unknown_shapes)
            assert est.inputs["inputs"][0]["shape"] == list(inputs.inputs[0].shape)
            assert any(a.startswith("shapes found by onnx.shape_inference") for a in est.assumptions)


def test_embedding_gather_reads_the_rows_it_gathers_not_the_table(zoo) -> None:
    path = zoo("bert", "optimum")  # vocabulary 1000, hidden 32, sequence 128 by default
    by_name = {c.name: c for c in graph_costs(path).nodes}
    words = by_name["/bert/embeddings/word_embeddings/Gather"]
    assert words.inputs == ("input_ids",) and words.input_elems == 128  # the ids
    assert words.output_elems == 128 * 32
    assert words.weight_elems == 128 * 32 and words.weight_bytes == 4 * 128 * 32  # 128 rows of 32 floats
    assert words.weight_elems < 1000 * 32  # not the table
    positions = by_name["/bert/embeddings/position_embeddings/Gather"]
    assert positions.folded and not positions.inputs  # position ids are a static Slice of a buffer: folded
    assert positions.weight_elems == 128 * 32 + 128  # were it run: 128 rows and the 128 indices


def test_constant_folding_takes_the_shape_arithmetic_away(zoo) -> None:
    path = zoo("bert", "optimum")
    costs = graph_costs(path)
    est = estimate(path, device("jetson-orin-agx"), precision="fp16")
    rows = {r["name"]: r for r in est.per_node}
    shape_ops = [c for c in costs.nodes if c.op_type in ("Shape", "ConstantOfShape", "Constant")]
    assert len(shape_ops) >= 70 and all(c.folded for c in shape_ops)
    assert all(rows[c.name]["ms"] == 0 and rows[c.name]["note"].startswith(("constant", "weight")) for c in shape_ops)
    folded = sum(c.folded for c in costs.nodes)
    executed = sum(r["bound"] != "fused" for r in est.per_node)
    assert folded > len(costs.nodes) / 2  # most of an optimum export is shape arithmetic
    assert executed < len(costs.nodes) / 3
    reshapes = [r for r in est.per_node if r["op_type"] in ("Reshape", "Unsqueeze", "Identity")]
    assert reshapes and all(r["ms"] == 0 for r in reshapes)


@pytest.mark.parametrize("arch, exporter, layers", [("bert", "optimum", 2), ("distilbert", "optimum", 2),
                                                    ("distilbert", "torch", 2), ("vit", "optimum", 2),
                                                    ("gpt2", "optimum", 2)])
def test_attention_fused_on_tensorrt_only(zoo, arch: str, exporter: str, layers: int) -> None:
    path = zoo(arch, exporter)
    trt = estimate(path, device("jetson-orin-agx"), precision="fp16")
    cpu = estimate(path, device("x86-avx2"), precision="fp32")
    qnn = estimate(path, device("snapdragon-8gen3"), precision="int8")
    assert trt.fusions["attention"] == layers
    assert "attention" not in cpu.fusions and "attention" not in qnn.fusions
    kernels = [r for r in trt.per_node if r.get("kernel") == "Attention (fused)"]
    assert len(kernels) == layers
    for k in kernels:
        ops = k["note"].split("(")[1]
        assert ops.count("MatMul") == 2 and "Softmax" in ops
    softmax = [r for r in trt.per_node if r["op_type"] == "Softmax"]
    assert all(r["note"].startswith("fused into") for r in softmax)
    assert trt.per_op_type["Attention (fused)"]["macs"] > 0


@pytest.mark.parametrize("arch, layers, linear", [("bert", 2, 6), ("distilbert", 2, 6)])
def test_matmul_bias_and_gelu_are_fused(zoo, arch: str, layers: int, linear: int) -> None:
    """Every projection (q, k, v, output, FFN in/out) is a MatMul with a bias Add: each is one GEMM
    kernel, the FFN's first one with its bias inside the GELU kernel (as ONNX Runtime's BiasGelu)."""
    path = zoo(arch, "optimum")
    est = estimate(path, device("jetson-orin-agx"), precision="fp16")
    assert est.fusions["gelu"] == layers
    assert est.fusions["gemm+bias"] + est.fusions["gelu"] == layers * linear
    qnn = estimate(path, device("snapdragon-8gen3"), precision="int8")
    assert qnn.fusions["gelu"] == layers and qnn.fusions["gemm+bias"] == est.fusions["gemm+bias"]
    cpu = estimate(path, device("x86-avx2"), precision="fp32")  # the graph ONNX Runtime runs: its own fusions
    assert cpu.fusions == {} and not device("x86-avx2").fuse_matmul_bias
    assert sum(r["op_type"] == "BiasGelu" for r in cpu.per_node) == layers
    gelu = next(r for r in est.per_node if r.get("kernel") == "Gelu (fused)")
    assert "Erf" in gelu["note"] and gelu["op_class"] == "activation"


def test_tanh_gelu_of_gpt2_is_one_kernel(zoo) -> None:
    est = estimate(zoo("gpt2", "optimum"), device("snapdragon-8gen3"), precision="int8")
    gelu = [r for r in est.per_node if r.get("kernel") == "Gelu (fused)"]
    assert len(gelu) == 2 and all("Tanh" in r["note"] and "Pow" in r["note"] for r in gelu)


def _gpt2_inputs(path: Path, past: int):
    specs = load_inputs(path)
    shapes = {}
    for i in specs.inputs:
        if i.role == "past_key_values":
            shapes[i.name] = (1, i.shape[1], past, i.shape[3])
        else:
            shapes[i.name] = (1, past + 1) if i.role == "attention_mask" else (1, 1)
    return load_inputs(path, shapes)


def test_kv_cache_traffic_grows_with_the_past(zoo) -> None:
    path = zoo("gpt2", "optimum")  # 2 layers, 2 heads of 16
    dev = device("jetson-orin-agx")
    short, long = (estimate(path, dev, precision="fp16", inputs=_gpt2_inputs(path, p)) for p in (0, 64))
    assert long.latency_ms > short.latency_ms

    def concat_bytes(est) -> int:
        return sum(r["bytes_moved"] for r in est.per_node if r["op_type"] == "Concat" and r["bound"] != "fused")

    per_layer_cache = 2 * 2 * 64 * 16 * 2  # key + value, 2 heads x 64 positions x 16, fp16
    assert concat_bytes(long) - concat_bytes(short) >= 2 * per_layer_cache  # read by Concat, written as present
    assert sum(r["bytes_moved"] for r in long.per_node) > sum(r["bytes_moved"] for r in short.per_node) + 4 * per_layer_cache
    assert long.inputs["inputs"][1]["shape"] == [1, 2, 64, 16]
