"""edgekd.analysis.support.analyze on the QNN HTP targets: a float model is quantized for the
target first (the note says so and how it was calibrated), then ONNX Runtime's QNN EP places the
quantized graph for real (the HTP backend of onnxruntime-qnn, emulated on x86).

A representative set, not all 14 zoo exports (each takes a quantization and a QNN session, about
a second on tiny configs): both exporters; text (BERT, three int64 inputs, Erf-GELU fused to Gelu),
image transformer (ViT), CNN with optimum's Pad/Identity nodes (ResNet), decoder (GPT-2 torch) with
a node the EP leaves on the CPU, EfficientNet whose pooling the QNN EP cannot take (no session at
all), GPT-2 with past_key_values (empty past refused, one decode step placed), the calibration
samples given, and an already quantized model."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekd.analysis.support import analyze
from edgekd.analysis.support_types import RUNS_ON
from edgekd.config.loading import ConfigSearch, load_target
from edgekd.errors import ConfigError

pytestmark = pytest.mark.qnn


@pytest.fixture(autouse=True)
def _qnn_runtime() -> None:
    pytest.importorskip("onnxruntime_qnn")


def target(name: str = "snapdragon-8gen3"):
    return load_target(name, ConfigSearch()).config


def assert_complete(report: dict) -> None:
    assert all(n["runs_on"] in RUNS_ON for n in report["nodes"])
    assert all(n["reason"] for n in report["nodes"] if n["runs_on"] != "accelerator")
    assert len({n["name"] for n in report["nodes"]}) == len(report["nodes"]) == sum(report["counts"].values())
    assert report["macs_total"] > 0 and 0.0 <= report["macs_share_off"] <= 1.0


def quantized_first(report: dict, rows: str = "4 generated feeds: fit for placement, not for accuracy") -> None:
    note = report["notes"][0]
    assert "has no Q/DQ nodes and the HTP runs only quantized graphs, so it was quantized for" in note
    assert f"calibrated on {rows}" in note and report["inputs"] in note
    reported = int(re.search(r"the quantized graph's \((\d+) nodes", report["notes"][1]).group(1))
    assert reported == len(report["nodes"])


@pytest.mark.parametrize("arch, exporter", [("bert", "optimum"), ("vit", "torch"), ("resnet", "optimum")])
def test_float_models_are_quantized_then_placed_on_the_htp(zoo, arch, exporter):
    report = analyze(zoo(arch, exporter), "snapdragon-8gen3", target())
    assert_complete(report)
    quantized_first(report)
    off = [n for n in report["nodes"] if n["runs_on"] != "accelerator"]
    # the EP's default leaves only the graph-input Q (float inputs) and the graph-output DQ to the CPU
    assert {n["op_type"] for n in off} <= {"QuantizeLinear", "DequantizeLinear"} and len(off) <= 2
    assert all("QNN EP is configured to not take" in n["reason"] for n in off)
    ops = {n["op_type"] for n in report["nodes"] if n["runs_on"] == "accelerator"}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    if arch in ("bert", "vit"):
        assert {"LayerNormalization", "Softmax", "MatMul", "Gelu"} <= ops  # Erf-GELU fused by qnn_preprocess_model


def test_a_node_the_htp_cannot_run_falls_back_with_the_eps_reason(zoo):
    report = analyze(zoo("gpt2", "torch"), "snapdragon-8gen3", target())
    assert_complete(report)
    gather_nd = [n for n in report["nodes"] if n["op_type"] == "GatherND"]
    assert [n["runs_on"] for n in gather_nd] == ["fallback"] and gather_nd[0]["reason"]
    assert report["fallback"] == "ONNX Runtime CPU" and 0.0 < report["node_share_off"] < 0.05


def test_no_qnn_session_means_every_node_unsupported(zoo):
    report = analyze(zoo("efficientnet", "torch"), "snapdragon-8gen3", target())
    assert_complete(report)
    assert report["counts"]["unsupported"] == len(report["nodes"]) and report["macs_share_off"] == 1.0
    assert all("ONNX Runtime could not build a QNN EP session" in n["reason"] for n in report["nodes"])
    pool = [n for n in report["nodes"] if n["op_type"] == "AveragePool"]
    assert pool and pool[0]["reason"].startswith("the QNN EP rejected it (")


def test_decoder_needs_a_past_then_places_the_kv_cache_on_the_htp(zoo):
    from edgekd.graph.resolve import load_inputs

    path = zoo("gpt2", "optimum")
    with pytest.raises(ConfigError, match="empty KV cache") as refused:  # the default: prefill, empty past
        analyze(path, "snapdragon-8gen3", target())
    assert "--shape" in refused.value.hint
    past = {i.name: (1, 2, 16, 16) for i in onnx.load(str(path), load_external_data=False).graph.input
            if i.name.startswith("past_key_values")}
    report = analyze(path, "snapdragon-8gen3", target(), inputs=load_inputs(path, {**past, "input_ids": (1, 1)}))
    assert_complete(report)
    quantized_first(report)
    concats = [n for n in report["nodes"] if n["op_type"] == "Concat"]
    assert concats and all(n["runs_on"] == "accelerator" for n in concats)


def test_given_calibration_samples_are_used_and_named(zoo):
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.resolve import load_inputs

    path = zoo("bert", "torch")
    inputs = load_inputs(path)
    report = analyze(path, "snapdragon-8gen2", target("snapdragon-8gen2"), inputs=inputs, calib=make_feeds(inputs, rows=6))
    assert_complete(report)
    quantized_first(report, "6 of the 6 calibration samples given")
    assert "v73" in report["accelerator"]


def test_a_quantized_model_is_placed_as_given(zoo, tmp_path: Path):
    from edgekd.backends.qnn.htp import quantize_for_htp
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.resolve import load_inputs

    fp32 = zoo("distilbert", "optimum")
    inputs = load_inputs(fp32)
    qdq = tmp_path / "distilbert_htp.onnx"
    quantize_for_htp(fp32, qdq, make_feeds(inputs, rows=2), target().qnn, "minmax", inputs)
    report = analyze(qdq, "snapdragon-8gen3", target(), inputs=inputs)
    assert_complete(report)
    assert report["notes"][0] == "distilbert_htp.onnx is already quantized (Q/DQ nodes): placed as given"
    model = onnx.load(str(qdq))
    assert [n["name"] for n in report["nodes"]] == [n.name for n in model.graph.node]
    assert report["counts"]["accelerator"] >= len(model.graph.node) - 1
    np.testing.assert_equal(report["macs_total"], analyze(fp32, "jetson-orin-agx", load_target(
        "jetson-orin-agx", ConfigSearch()).config)["macs_total"])
