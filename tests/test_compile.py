"""`edgekd compile MODEL.onnx --target T`: a trained model (real architectures exported with optimum-onnx
and torch.onnx, and the digits student edgekd trained) through quantize, check, compile, evaluate and
bench, with the same build folder, report, budgets, exit codes and stage cache as `edgekd build`."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from helpers import FAST_PROFILE, ZOO, write

pytestmark = pytest.mark.slow
SCHEMA = json.loads((Path(__file__).parent.parent / "edgekd" / "report" / "report.schema.json").read_text())
COMPILE_STAGES = ["import", "quantize", "check", "compile", "evaluate", "bench"]
TARGETS = ("x86", "snapdragon-8gen3", "jetson-orin")  # the x86 alias, mobile-npu, jetson-orin (aliases of the shipped targets)
FAST = FAST_PROFILE


@pytest.fixture(scope="module")
def fast_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default budgets (the correctness ones: rule violations and unsupported nodes 0), a short bench."""
    return write(tmp_path_factory.mktemp("profiles") / "fast.toml", FAST)


def _metrics(report: dict) -> dict:
    return {k: m for s in report["stages"] for k, m in s["metrics"].items()}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("arch,exporter", ZOO)
def test_every_zoo_model_compiles_for_every_target_family(edgekd, zoo, fast_profile, tmp_path, arch, exporter, target):
    model = zoo(arch, exporter)
    run = edgekd("compile", str(model), "--target", target, "--profile", str(fast_profile), out_dir=tmp_path / "b")
    assert run.code == 0, run.err
    report = run.report
    jsonschema.validate(report, SCHEMA)
    assert [s["name"] for s in report["stages"]] == COMPILE_STAGES and report["verdict"] == "pass"
    assert report["project"]["via"] == "edgekd compile" and report["provenance"]["kind"] == "compiled"
    names = [i["name"] for i in report["inputs"]["inputs"]]
    assert names == [i.name for i in onnx.load(str(model)).graph.input]
    metrics = _metrics(report)
    if report["task"]["name"] == "causal-lm":  # a KV-cache decoder at a token sequence: perplexity on text fp32 sampled itself
        assert arch == "gpt2" and report["task"]["metric"]["name"] == "perplexity"
        assert metrics["int8.perplexity"]["method"] == "measured" and "sampled itself" in metrics["engine.perplexity"]["how"]
    else:  # no labels: accuracy is not available, and the INT8 graph and the engine say how often they agree with fp32
        assert metrics["int8.accuracy"]["method"] == "not available" and metrics["engine.accuracy"]["value"] is None
    assert 0 <= metrics["engine.agreement_pct"]["value"] <= 100
    generated = "sampled itself" if report["task"]["name"] == "causal-lm" else "generated feeds"
    assert generated in metrics["engine.agreement_pct"]["how"]
    assert any("calibrated on generated feeds" in w for w in report["warnings"])
    assert metrics["check.unsupported_nodes"]["value"] == 0
    out = run.out_dir
    bundle = json.loads((out / "bundle" / "bundle.json").read_text())
    assert [i["name"] for i in bundle["inputs"]] == names
    lat = report["latency"]
    if report["target"]["runtime"] == "onnxruntime-cpu":
        engine_file = json.loads((out / "engine.json").read_text())["engine_file"]  # engine.onnx, or engine.xml where OpenVINO won
        assert lat["method"] == "measured" and lat["runs"] >= 10 and (out / "engine" / engine_file).is_file()
    else:
        assert lat["method"] == "estimated" and lat["latency_ms"] > 0
    if report["target"]["runtime"] == "qnn-htp":
        assert (out / "engine" / "student_ctx.onnx").is_file()
    if report["target"]["runtime"] == "tensorrt":
        assert (out / "bundle" / "build_engine.sh").is_file()
    assert (out / "MODEL_CARD.md").read_text().startswith(f"# Model card: {report['project']['name']} model for")


def _split_folder(folder: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "input.npy", x)
    if y is not None:
        np.save(folder / "labels.npy", y)
    return folder


def test_labelled_data_gives_accuracy_and_a_rebuild_is_cached(edgekd, cold_build, fast_profile, tmp_path):
    """The digits student edgekd trained, compiled from its ONNX with the digits splits as data
    folders: the engine's accuracy is measured, as accurate as the build's own engine."""
    from edgekd.examples.digits import load

    splits = load()
    data = _split_folder(tmp_path / "test", splits.test.x, splits.test.y)
    calib = _split_folder(tmp_path / "calib", splits.calib.x)
    args = ("compile", str(cold_build.out_dir / "student.onnx"), "--target", "x86", "--profile", str(fast_profile),
            "--data", str(data), "--calib", str(calib))
    run = edgekd(*args, out_dir=tmp_path / "b")
    assert run.code == 0, run.err
    acc = {k: v["value"] for k, v in run.report["accuracy"].items()}
    built = cold_build.report["accuracy"]
    assert acc["onnx_fp32"] == pytest.approx(built["onnx_fp32"]["value"])  # the same model on the same test split
    assert abs(acc["engine"] - built["engine"]["value"]) <= 3.0
    assert "engine.agreement_pct" not in _metrics(run.report)  # labels: accuracy, no proxy
    again = edgekd(*args, out_dir=tmp_path / "b2")
    assert again.code == 0 and all(s["status"] == "cached" for s in again.report["stages"])


def test_project_data_and_budgets(edgekd, cold_build, tmp_path):
    """--project takes the project's splits; a broken budget exits 1 with the report written."""
    tight = write(tmp_path / "tight.toml", FAST + "\n[budgets]\nlatency_p90_ms = 0.000001\n")
    run = edgekd("compile", str(cold_build.out_dir / "student.onnx"), "--target", "x86", "--profile", str(tight),
                 "--project", str(Path(__file__).parent.parent / "edgekd" / "examples" / "digits.toml"), out_dir=tmp_path / "b")
    assert run.code == 1
    assert run.report["verdict"] == "fail" and run.report["failed_budgets"][0]["budget"] == "latency_p90_ms"
    assert run.report["accuracy"]["engine"]["value"] > 80.0


@pytest.mark.parametrize("case,error", [
    ("missing", "not found"),
    ("garbage", "not a valid ONNX model"),
    ("quantized", "is already quantized (it has QuantizeLinear/DequantizeLinear nodes)"),
    ("symbolic", "axis 1 ('features') has no value"),
    ("bad-shape", "is not NAME=DIMS"),
    ("data-missing-input", "no data for input(s) attention_mask"),
])
def test_bad_input_exits_2_with_one_line(edgekd, zoo, cold_build, tmp_path, case, error):
    from onnx import TensorProto, helper

    args: list[str] = []
    model = tmp_path / "m.onnx"
    if case == "garbage":
        model.write_text("not onnx")
    elif case == "quantized":
        model = cold_build.out_dir / "student_int8.onnx"
    elif case == "symbolic":
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "mlp",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "features"])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(model))
    elif case == "bad-shape":
        model, args = zoo("bert", "torch"), ["--shape", "input_ids"]
    elif case == "data-missing-input":
        folder = tmp_path / "d"
        folder.mkdir()
        np.save(folder / "input_ids.npy", np.zeros((2, 8), np.int64))
        model, args = zoo("bert", "torch"), ["--data", str(folder)]
    run = edgekd("compile", str(model), "--target", "x86", *args, out_dir=tmp_path / "b")
    assert run.code == 2, run.err
    assert error in run.err and "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "report.json").exists()
