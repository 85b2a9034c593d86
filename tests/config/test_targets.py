"""Every shipped target: validated, and the built-in example built for it. x86 and the Snapdragons
run here for real (QNN HTP in emulation); the Jetsons produce their deploy bundle."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from helpers import write

from edgekd.report.build_report import SCHEMA_FILE

ROOT = Path(__file__).parents[2]
SHIPPED = sorted(p.stem for p in (ROOT / "targets").glob("*.toml"))
pytestmark = pytest.mark.slow


def _runtime(name: str) -> str:
    import tomllib

    return tomllib.loads((ROOT / "targets" / f"{name}.toml").read_text())["runtime"]


def _host_can_run(name: str) -> bool:
    from edgekd.common.toolchain import cpu_flags
    from edgekd.config.loading import load_model
    from edgekd.config.target import Target

    target, _ = load_model(ROOT / "targets" / f"{name}.toml", Target, "target")
    return set(target.host.cpu_flags) <= cpu_flags()


def test_the_issue_targets_are_shipped():
    assert {"jetson-orin-agx", "jetson-orin-agx-dla", "jetson-orin-nx", "jetson-orin-nano", "snapdragon-8gen3",
            "snapdragon-8gen2", "x86-avx2", "x86-avx512-vnni"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_target_builds_the_example(name, cold_build, edgekd, tmp_path):
    assert cold_build.code == 0
    runtime = _runtime(name)
    if runtime == "qnn-htp":
        pytest.importorskip("onnxruntime_qnn")
    if runtime == "onnxruntime-cpu" and not _host_can_run(name):
        pytest.skip(f"this host lacks the CPU flags {name} needs")
    out = tmp_path / name
    run = edgekd("build", "--target", name, "--profile", "ci", out_dir=out)
    assert run.code == 0, run.err
    report = run.report
    assert report["verdict"] == "pass" and report["target"]["name"] == name
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    assert metrics["int8.rule_violations"]["value"] == 0
    assert metrics["check.unsupported_nodes"]["value"] == 0
    bundle = json.loads((out / "bundle" / "bundle.json").read_text())
    assert bundle["runtime"] == runtime and (out / "bundle" / "run_on_device.py").is_file()
    lat = report["latency"]
    points = lat["compare"]  # the Pareto view's latency points, each saying how it was obtained
    if runtime == "onnxruntime-cpu":
        assert lat["method"] == "measured" and len(lat["samples_ms"]) == lat["runs"]
        assert {p["method"] for p in points.values()} == {"measured"}
        assert "PyTorch" in points["teacher"]["how"] and "student.onnx" in points["student_fp32"]["how"]
    else:  # no phone or Jetson here: the latency model, labelled so everywhere
        assert lat["method"] == "estimated" and lat["latency_ms"] > 0 and lat["per_op_type"]
        assert points["student_fp32"]["method"] == "estimated" and points["student_fp32"]["p90_ms"] > 0
        assert points["teacher"] == {"p90_ms": None, "method": "not measured", "how": points["teacher"]["how"]}  # a torch teacher
        assert metrics["latency.p90_ms"]["method"] == "estimated"
        assert "ESTIMATED" in run.out and "Estimated, not measured" in (out / "report.md").read_text()


def test_snapdragon_build_is_a_real_htp_context_binary(cold_build, edgekd, tmp_path):
    pytest.importorskip("onnxruntime_qnn")
    import onnx

    run = edgekd("build", "--target", "mobile-npu", "--profile", "ci", out_dir=tmp_path / "npu")
    assert run.code == 0, run.err
    ctx_model = onnx.load(str(tmp_path / "npu" / "engine" / "student_ctx.onnx"))
    assert any(n.op_type == "EPContext" for n in ctx_model.graph.node)
    assert list((tmp_path / "npu" / "engine").glob("*.bin"))
    int8 = onnx.load(str(tmp_path / "npu" / "student_int8.onnx"))
    dims = [d.dim_value for d in int8.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 8, 8]  # static shapes for the HTP
    zero_points = {i.data_type for i in int8.graph.initializer if i.name.endswith("zero_point")}
    assert zero_points <= {onnx.TensorProto.UINT8, onnx.TensorProto.INT32}
    acc = run.report["accuracy"]["engine"]
    assert acc["method"] == "measured" and "QNN HTP v75" in acc["how"] and "emulated" in acc["how"]
    support = json.loads((tmp_path / "npu" / "support.json").read_text())
    assert support["accelerator"].startswith("QNN HTP v75") and support["counts"]["accelerator"] > 0


def test_jetson_bundle_and_host_side_accuracy(cold_build, edgekd, tmp_path):
    import onnx
    from onnx import numpy_helper

    run = edgekd("build", "--target", "jetson-orin", "--profile", "ci", out_dir=tmp_path / "jet")
    assert run.code == 0, run.err
    bundle = tmp_path / "jet" / "bundle"
    script = (bundle / "build_engine.sh").read_text()
    assert subprocess.run(["bash", "-n", str(bundle / "build_engine.sh")]).returncode == 0
    assert "--int8" in script and "--onnx=model.onnx" in script  # TensorRT 10.x precision flags
    model = onnx.load(str(bundle / "model.onnx"))
    zps = [numpy_helper.to_array(i) for i in model.graph.initializer if "zero_point" in i.name]
    assert zps and all(np.all(z == 0) and z.dtype == np.int8 for z in zps)  # symmetric INT8 Q/DQ, no INT32 biases
    engine = json.loads((tmp_path / "jet" / "engine.json").read_text())
    assert engine["built_here"] is False
    notes = next(s for s in run.report["stages"] if s["name"] == "compile")["notes"]
    assert any("engine NOT built here" in n for n in notes)
    assert "host-side" in run.report["accuracy"]["engine"]["how"]


def test_tensorrt_11_target_gets_a_strongly_typed_build(cold_build, edgekd, tmp_path):
    text = (ROOT / "targets" / "jetson-orin-agx.toml").read_text()
    text = text.replace("trt_major = 10", "trt_major = 11").replace('jetpack = "6.2"', 'jetpack = "7.2"')
    target = write(tmp_path / "orin-trt11.toml", text.replace('aliases = ["jetson-orin"]', "aliases = []"))
    run = edgekd("build", "--target", str(target), "--profile", "ci", out_dir=tmp_path / "t11")
    assert run.code == 0, run.err
    script = (tmp_path / "t11" / "bundle" / "build_engine.sh").read_text()
    assert "--int8" not in script and "--fp16" not in script  # TensorRT 11: precision comes from the graph


def test_dla_target_reports_dla_support(cold_build, edgekd, tmp_path):
    run = edgekd("build", "--target", "jetson-orin-agx-dla", "--profile", "ci", out_dir=tmp_path / "dla")
    assert run.code == 0, run.err
    support = json.loads((tmp_path / "dla" / "support.json").read_text())
    assert support["accelerator"].startswith("DLA core 0") and "GPU" in support["fallback"]
    script = (tmp_path / "dla" / "bundle" / "build_engine.sh").read_text()
    assert "--useDLACore=0" in script and "--allowGPUFallback" in script


def test_fallback_budget_stops_the_build(cold_build, edgekd, tmp_path):
    """A profile that allows 0 % of nodes off the NPU fails at the check stage (the QNN EP keeps the
    graph-input Q and graph-output DQ on the CPU by default)."""
    pytest.importorskip("onnxruntime_qnn")
    profile = write(tmp_path / "all-on-npu.toml", (ROOT / "profiles" / "ci.toml").read_text()
                    .replace("[budgets]", "[budgets]\nfallback_nodes_pct = 0.0"))
    run = edgekd("build", "--target", "mobile-npu", "--profile", str(profile), out_dir=tmp_path / "npu")
    assert run.code == 1
    assert [(v["stage"], v["budget"]) for v in run.report["failed_budgets"]] == [("check", "fallback_nodes_pct")]
