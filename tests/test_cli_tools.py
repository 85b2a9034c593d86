"""`edgekd check`, `edgekd estimate` and `edgekd bench --device` on real build outputs."""
from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.slow


def test_check_on_the_dla_target(cold_build, edgekd):
    model = cold_build.out_dir / "student_int8.onnx"
    run = edgekd("check", str(model), "--target", "jetson-orin-agx-dla", "--json")
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert report["target"] == "jetson-orin-agx-dla" and report["macs_total"] > 0
    assert {n["runs_on"] for n in report["nodes"]} <= {"accelerator", "fallback", "unsupported"}
    # ORT's default (asymmetric) x86 quantization breaks TensorRT's symmetric Q/DQ rule: named per node
    off = [n for n in report["nodes"] if n["runs_on"] != "accelerator"]
    assert off and all(n["reason"] for n in off)
    text = edgekd("check", str(model), "--target", "jetson-orin-agx-dla")
    assert "off the accelerator" in text.out


def test_check_on_x86_runs_every_node(cold_build, edgekd):
    run = edgekd("check", str(cold_build.out_dir / "student_int8.onnx"), "--target", "x86", "--json")
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
