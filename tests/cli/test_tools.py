"""`edgekd check`, `edgekd estimate` and `edgekd bench --device` on real build outputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_check_on_the_dla_target(cold_build, edgekd):
    model = cold_build.out_dir / "student_int8.onnx"
    run = edgekd("check", str(model), "--target", "jetson-orin-agx-dla", "--json")
    report = json.loads(run.out)
    assert report["counts"]["unsupported"] > 0  # the x86 engine's asymmetric Q/DQ: see below
    assert run.code == 1 and "check failed" in run.err and f"{report['counts']['unsupported']} unsupported" in run.err  # a CI step fails
    assert edgekd("check", str(model), "--target", "jetson-orin-agx-dla", "--fail-on", "never").code == 0
    assert report["target"] == "jetson-orin-agx-dla" and report["macs_total"] > 0
    assert {n["runs_on"] for n in report["nodes"]} <= {"accelerator", "fallback", "unsupported"}
    # ORT's default (asymmetric) x86 quantization breaks TensorRT's symmetric Q/DQ rule: named per node
    off = [n for n in report["nodes"] if n["runs_on"] != "accelerator"]
    assert off and all(n["reason"] for n in off)
    text = edgekd("check", str(model), "--target", "jetson-orin-agx-dla")
    assert "off the accelerator" in text.out


def test_check_on_x86_runs_every_node(cold_build, edgekd):
    run = edgekd("check", str(cold_build.out_dir / "student_int8.onnx"), "--target", "x86", "--json")
    assert run.code == 0 and edgekd("check", str(cold_build.out_dir / "student_int8.onnx"), "--target", "x86", "--fail-on", "fallback").code == 0
    report = json.loads(run.out)
    assert report["counts"]["accelerator"] == len(report["nodes"]) and report["macs_share_off"] == 0


def test_estimate_gives_latency_and_breakdown(cold_build, edgekd):
    run = edgekd("estimate", str(cold_build.out_dir / "student.onnx"), "--target", "jetson-orin", "--precision", "fp16", "--json")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["method"] == "estimated" and result["latency_ms"] > 0
    assert "Conv" in result["per_op_type"] and result["per_op_type"]["Conv"]["macs"] > 0
    bigger = json.loads(edgekd("estimate", str(cold_build.out_dir / "student.onnx"), "--target", "jetson-orin",
                               "--precision", "fp16", "--batch", "64", "--json").out)
    assert bigger["latency_ms"] > result["latency_ms"]
    text = edgekd("estimate", str(cold_build.out_dir / "student.onnx"), "--target", "x86")
    assert "estimated" in text.out and "Conv" in text.out


def test_estimate_rejects_a_precision_the_target_lacks(cold_build, edgekd):
    run = edgekd("estimate", str(cold_build.out_dir / "student.onnx"), "--target", "mobile-npu", "--precision", "fp32")
    assert run.code == 2 and "does not run fp32" in run.err


def test_check_rejects_a_missing_model(edgekd, tmp_path):
    run = edgekd("check", str(tmp_path / "nope.onnx"), "--target", "x86")
    assert run.code == 2 and "not found" in run.err and "Traceback" not in run.err
    (tmp_path / "bad.onnx").write_text("not onnx")
    run = edgekd("estimate", str(tmp_path / "bad.onnx"), "--target", "x86")
    assert run.code == 2 and "not a valid ONNX model" in run.err


def test_bench_on_a_local_device_adds_to_the_report(cold_build, edgekd, tmp_path):
    """The local transport runs the device-side runner in a subprocess: the end-to-end path of
    `--device ssh://...` with the network replaced by a folder."""
    build = tmp_path / "build"
    shutil.copytree(cold_build.out_dir, build)
    (tmp_path / "device").mkdir()
    run = edgekd("bench", str(build), "--device", f"local://{tmp_path / 'device'}", "--runs", "50", "--json")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["source"].startswith("measured on") and len(result["latency"]["samples_ms"]) == 50
    report = json.loads((build / "report.json").read_text())
    assert report["device_results"][-1]["latency"]["p90_ms"] == result["latency"]["p90_ms"]
    assert "Measured on a device" in (build / "report.md").read_text()


def test_bench_rejects_a_bad_device_url(cold_build, edgekd, tmp_path):
    run = edgekd("bench", str(cold_build.out_dir), "--device", "ftp://host")
    assert run.code == 2 and "Traceback" not in run.err


# ---------------------------------------------------------------- real architectures (tests/conftest.py zoo)


def test_estimate_a_decoder_step_with_shapes(edgekd, zoo):
    args = ("estimate", str(zoo("gpt2", "optimum")), "--target", "jetson-orin", "--precision", "fp16")
    prefill = json.loads(edgekd(*args, "--json").out)
    step = edgekd(*args, "--shape", "input_ids=1x1", "--shape", "past_key_values.0.key=1x2x64x16", "--json")
    assert step.code == 0, step.err
    result = json.loads(step.out)
    shapes = {i["name"]: i["shape"] for i in result["inputs"]["inputs"]}
    assert shapes["attention_mask"] == [1, 65] and shapes["past_key_values.1.value"] == [1, 2, 64, 16]
    assert result["method"] == "estimated" and 0 < result["latency_ms"] < prefill["latency_ms"]
    text = edgekd(*args, "--shape", "input_ids=1x1", "--shape", "past_key_values.0.key=1x2x64x16")
    assert "inputs input_ids 1x1, past_key_values.0.key 1x2x64x16" in text.out and "estimated" in text.out


@pytest.mark.qnn
def test_check_a_float_transformer_on_the_npu_says_it_quantized_first(edgekd, zoo, tmp_path):
    pytest.importorskip("onnxruntime_qnn")
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    np.save(calib / "input_ids.npy", rng.integers(0, 1000, (3, 32)))
    np.save(calib / "attention_mask.npy", np.ones((3, 32), np.int64))
    run = edgekd("check", str(zoo("distilbert", "torch")), "--target", "snapdragon-8gen3", "--calib", str(calib),
                 "--shape", "input_ids=1x32", "--shape", "attention_mask=1x32")
    assert run.code == 0, run.err
    assert "note: model.onnx has no Q/DQ nodes and the HTP runs only quantized graphs" in run.out
    assert "calibrated on 3 of the 3 calibration samples given" in run.out
    assert "on the accelerator" in run.out.splitlines()[-1]


def test_check_with_a_shape_for_an_unknown_input_exits_2(edgekd, zoo):
    run = edgekd("check", str(zoo("vit", "torch")), "--target", "x86", "--shape", "input_ids=1x8")
    assert run.code == 2 and "names 'input_ids', which the model does not have (its inputs: pixel_values)" in run.err
