"""edgekd.analysis.support.analyze on the zoo of real exports (optimum-onnx and torch.onnx, tiny
configs) for every shipped TensorRT and x86 target: a verdict for every node, a reason for every
node off the accelerator, MACs from the graph at the resolved inputs. The QNN targets are in
test_support_qnn.py (they quantize and place for real, so they run a representative set)."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from helpers import ZOO

from edgekd.analysis.support import analyze
from edgekd.analysis.support_types import RUNS_ON
from edgekd.config.loading import ConfigSearch, load_target

RULE_TARGETS = ["jetson-orin-agx", "jetson-orin-agx-dla", "jetson-orin-nx", "jetson-orin-nano", "x86-avx2",
                "x86-avx512-vnni"]


def target(name: str):
    return load_target(name, ConfigSearch()).config


def by_name(report: dict) -> dict[str, dict]:
    return {n["name"]: n for n in report["nodes"]}


def assert_complete(report: dict, path: Path) -> None:
    """One verdict per node of the model, in graph order; a reason for each node off the accelerator."""
    model = onnx.load(str(path), load_external_data=False)
    assert [(n["name"], n["op_type"]) for n in report["nodes"]] == \
        [(n.name or f"{n.op_type}_{i}", n.op_type) for i, n in enumerate(model.graph.node)]
    assert all(n["runs_on"] in RUNS_ON for n in report["nodes"])
    assert all(n["reason"] for n in report["nodes"] if n["runs_on"] != "accelerator")
    assert sum(report["counts"].values()) == len(report["nodes"])
    assert report["macs_total"] > 0 and 0.0 <= report["macs_share_off"] <= 1.0  # every zoo model has Conv or MatMul


@pytest.mark.parametrize("name", RULE_TARGETS)
@pytest.mark.parametrize("arch, exporter", ZOO)
def test_every_node_gets_a_verdict(zoo, arch, exporter, name):
    path = zoo(arch, exporter)
    report = analyze(path, name, target(name))
    assert_complete(report, path)
    if name.startswith("x86") or name == "jetson-orin-agx":  # the CPU EP, and the GPU parser, take every node
        assert report["counts"]["accelerator"] == len(report["nodes"]) and report["macs_share_off"] == 0.0
    if name.startswith("jetson"):
        assert "nothing here ran TensorRT" in report["notes"][0] and "TensorRT 10.3" in report["accelerator"]
        assert report["inputs"] in report["notes"][1]


@pytest.mark.parametrize("exporter", ["optimum", "torch"])
def test_bert_falls_back_from_dla_to_the_gpu(zoo, exporter):
    report = analyze(zoo("bert", exporter), "jetson-orin-agx-dla", target("jetson-orin-agx-dla"))
    assert report["fallback"] == "GPU (GPU fallback)" and report["counts"]["unsupported"] == 0
    off = {n["op_type"]: n["reason"] for n in report["nodes"] if n["runs_on"] == "fallback"}
    assert "normalization layer has no DLA implementation" in off["LayerNormalization"]
    assert "gather layer (embedding lookup)" in off["Gather"]
    assert "DLA's activations are ReLU" in off["Erf"]
    assert "both inputs are activations" in off["MatMul"]
    assert "is INT64" in off["Unsqueeze"]  # the attention mask: DLA computes INT8/FP16 only
    matmuls = [n for n in report["nodes"] if n["op_type"] == "MatMul"]
    assert {n["runs_on"] for n in matmuls} == {"accelerator", "fallback"}  # weight MatMuls on DLA, attention's not
    # TensorRT 10.x ISoftMaxLayer on DLA: axis W, 128 <= 1024 with heads and sequence > 1: it stays on the DLA
    assert {n["runs_on"] for n in report["nodes"] if n["op_type"] == "Softmax"} == {"accelerator"}
    assert 0.0 < report["node_share_off"] < 1.0 and 0.0 < report["macs_share_off"] < 1.0
    assert "input_ids int64 1x128" in report["inputs"]  # the sequence resolved to 128, not pinned to 1


def test_dla_without_gpu_fallback_makes_the_build_fail(zoo):
    dla = target("jetson-orin-agx-dla")
    strict = dla.model_copy(update={"tensorrt": dla.tensorrt.model_copy(update={"gpu_fallback": False})})
    report = analyze(zoo("vit", "torch"), "dla-strict", strict)
    off = [n for n in report["nodes"] if n["runs_on"] != "accelerator"]
    assert off and all(n["runs_on"] == "unsupported" and n["reason"].endswith("and GPU fallback is off") for n in off)
    assert report["fallback"] == "none: the build fails"


def test_kv_cache_concat_falls_back_from_dla(zoo):
    from edgekd.graph.resolve import load_inputs

    path = zoo("gpt2", "optimum")
    model = onnx.load(str(path), load_external_data=False)
    past = {i.name: (1, 2, 16, 16) for i in model.graph.input if i.name.startswith("past_key_values")}
    inputs = load_inputs(path, {**past, "input_ids": (1, 1)})  # one decode step with 16 cached tokens
    report = analyze(path, "jetson-orin-agx-dla", target("jetson-orin-agx-dla"), inputs=inputs)
    assert_complete(report, path)
    concats = [n for n in report["nodes"] if n["op_type"] == "Concat" and n["runs_on"] == "fallback"]
    assert concats and all("KV-cache Concat joins the sequence axis" in n["reason"] or "INT" in n["reason"] for n in concats)
    assert "attention_mask int64 1x17" in report["inputs"]


def test_ort_contrib_ops_are_unsupported_on_tensorrt(zoo, tmp_path):
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = tmp_path / "bert_ort.onnx"
    optimize_model(str(zoo("bert", "optimum")), model_type="bert", num_heads=2, hidden_size=32,
                   opt_level=0).save_model_to_file(str(optimized))
    report = analyze(optimized, "jetson-orin-agx", target("jetson-orin-agx"))
    contrib = [n for n in report["nodes"] if n["op_type"] in ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization")]
    assert {n["op_type"] for n in contrib} == {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"}
    for node in contrib:
        assert node["runs_on"] == "unsupported"
        assert node["reason"].startswith(f"'com.microsoft::{node['op_type']}' is an ONNX Runtime contrib op")
    assert all(n["runs_on"] == "accelerator" for n in report["nodes"] if n["op_type"] in ("MatMul", "Gemm", "Tanh"))


def test_macs_match_across_exporters_and_targets(zoo):
    """The same architecture exported two ways has the same MACs; the DLA share counts only nodes off it."""
    gpu = {e: analyze(zoo("distilbert", e), "jetson-orin-agx", target("jetson-orin-agx")) for e in ("optimum", "torch")}
    assert gpu["optimum"]["macs_total"] == gpu["torch"]["macs_total"] > 0
    dla = analyze(zoo("distilbert", "torch"), "jetson-orin-agx-dla", target("jetson-orin-agx-dla"))
    off = sum(n["macs"] for n in dla["nodes"] if n["runs_on"] != "accelerator")
    assert dla["macs_share_off"] == pytest.approx(off / dla["macs_total"])
