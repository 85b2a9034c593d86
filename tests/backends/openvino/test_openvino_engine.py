"""OpenVINO candidates of the x86 tuner (edgekd.backends.openvino): the runner against ONNX Runtime,
NNCF INT8 against fp32, and compiles whose [tune] lists OpenVINO: its rows in the tuning record, an
OpenVINO engine through evaluate, bench, `edgekd bench` and the device runner, and the candidates left
out with a note where openvino is not importable."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from helpers import FAST_PROFILE, write

pytest.importorskip("openvino")
pytest.importorskip("nncf")

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "edgekd" / "report" / "report.schema.json").read_text())


def _target(folder: Path, name: str, runtimes: list[str]) -> Path:
    """targets/x86-avx2.toml with [tune] runtimes = `runtimes` (no alias: `x86` keeps picking the shipped ones)."""
    text = (ROOT / "targets" / "x86-avx2.toml").read_text().replace('aliases = ["x86"]', "aliases = []")
    text = re.sub(r"(?m)^runtimes = .*$", f"runtimes = {json.dumps(runtimes)}", text)
    assert f"runtimes = {json.dumps(runtimes)}" in text
    return write(folder / f"{name}.toml", text)


@pytest.fixture(scope="module")
def cnn(zoo) -> Path:
    return zoo("resnet", "torch")


def _feeds(model: Path, rows: int = 32) -> dict[str, np.ndarray]:
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.resolve import load_inputs

    return make_feeds(load_inputs(model, None), rows=rows)


def test_runner_matches_onnxruntime(cnn) -> None:
    from edgekd.backends.openvino.runtime import OpenVinoRunner, predict_file
    from edgekd.backends.openvino.settings import OpenVinoSettings
    from edgekd.backends.ort.session import predict_file as ort_predict

    feeds = _feeds(cnn, 8)
    settings = OpenVinoSettings(inference_num_threads=1)
    got, want = predict_file(cnn, feeds, settings), ort_predict(cnn, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    runner = OpenVinoRunner(cnn, settings)  # one sample: reshaped to static batch-1 shapes
    np.testing.assert_allclose(runner.run({n: a[:1] for n, a in feeds.items()})[0], want[:1], rtol=1e-3, atol=1e-4)


def test_settings_are_openvino_properties(monkeypatch) -> None:
    from edgekd.backends.openvino import settings as ov_settings

    props = ov_settings.OpenVinoSettings(inference_num_threads=1).properties()
    assert props == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    monkeypatch.setattr(ov_settings, "host_has_bf16", lambda: False)
    assert [s.inference_precision_hint for s in ov_settings.settings_space([1, 0])] == ["f32", "f32"]
    monkeypatch.setattr(ov_settings, "host_has_bf16", lambda: True)  # an INT8 IR's float ops run bf16 too
    assert [(s.inference_num_threads, s.inference_precision_hint) for s in ov_settings.settings_space([1, 0])] == \
        [(1, "f32"), (1, "bf16"), (0, "f32"), (0, "bf16")]


def test_nncf_int8_is_close_to_fp32_on_the_calibration_data(cnn, tmp_path) -> None:
    import openvino as ov

    from edgekd.backends.openvino.quantize import NncfRecipe, quantize_nncf
    from edgekd.backends.openvino.runtime import predict_file
    from edgekd.backends.openvino.settings import OpenVinoSettings

    rows = _feeds(cnn, 32)
    files, how = quantize_nncf(cnn, rows, tmp_path / "int8.xml", NncfRecipe())
    assert all(f.is_file() for f in files) and "nncf.quantize" in how and "32 calibration rows" in how
    ops = {op.get_type_name() for op in ov.Core().read_model(str(files[0])).get_ops()}
    assert "FakeQuantize" in ops  # NNCF's INT8 marks, which the CPU plugin runs as int8 kernels
    settings = OpenVinoSettings(inference_num_threads=1)
    fp32, int8 = predict_file(cnn, rows, settings), predict_file(files[0], rows, settings)
    spread = float(fp32.max() - fp32.min())
    assert float(np.abs(int8 - fp32).max()) < 0.1 * spread
    assert float((int8.argmax(-1) == fp32.argmax(-1)).mean()) >= 0.9


def _tuning_rows(tuning: dict) -> list[dict]:
    """Every candidate of the record: rows timed in full and those the pruner cut after screening."""
    return tuning["rows"] + tuning.get("pruned", [])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet", "bert"])
def test_openvino_only_target_builds_an_openvino_engine(edgekd, zoo, tmp_path, arch) -> None:
    """A target whose [tune] lists only openvino: the engine is an OpenVINO IR, evaluated and benched
    with OpenVINO; `edgekd bench` and the bundle's device runner measure it too."""
    model = zoo(arch, "torch")
    target, profile = _target(tmp_path, "ov-only", ["openvino"]), write(tmp_path / "fast.toml", FAST_PROFILE)
    run = edgekd("compile", str(model), "--target", str(target), "--profile", str(profile), out_dir=tmp_path / "b")
    assert run.code == 0, run.err
    report, out = run.report, run.out_dir
    jsonschema.validate(report, SCHEMA)
    tuning, engine = report["tuning"], json.loads((out / "engine.json").read_text())
    assert set(tuning["variants"]) == {"openvino-fp32", "openvino-int8-nncf"}
    assert "model_type TRANSFORMER" in tuning["variants"]["openvino-int8-nncf"] if arch == "bert" else "PERFORMANCE" in tuning["variants"]["openvino-int8-nncf"]
    for row in tuning["rows"]:
        assert row["runtime"] == "openvino" and 0 <= row["accuracy"] <= 100 and row["p90_ms"] > 0
        assert row["session"]["performance_hint"] == "LATENCY" and row["session"]["num_streams"] == 1
    assert "OpenVINO" in tuning["how"] and "ONNX Runtime session settings" not in tuning["how"]
    best = tuning["rows"][tuning["chosen"]]
    assert engine["runtime"] == "openvino" and engine["engine_file"] == "engine.xml" and engine["session"] == best["session"]
    assert (out / "engine" / "engine.xml").is_file() and (out / "engine" / "engine.bin").is_file()
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    assert "OpenVINO" in metrics["engine.agreement_pct"]["how"] and 0 <= metrics["engine.agreement_pct"]["value"] <= 100
    assert report["latency"]["method"] == "measured" and "OpenVINO" in report["latency"]["where"] and report["latency"]["runs"] >= 10
    assert report["latency"]["runtime"] == "openvino" and "Offline" in report["latency"]["scenarios"]
    ops = {op["op_type"] for op in report["latency"]["top_ops"]}  # OpenVINO's per-node counters, by its node types
    assert "PERF_COUNT" in report["latency"]["top_ops_how"] and ("Convolution" in ops if arch == "resnet" else ops)
    bundle = json.loads((out / "bundle" / "bundle.json").read_text())
    assert bundle["runtime"] == "openvino" and bundle["model"] == "engine.xml" and bundle["openvino"] == best["session"]
    if arch == "resnet":
        again = edgekd("bench", str(out), "--target", str(target))
        assert again.code == 0, again.err
        assert "OpenVINO" in json.loads((out / "bench.json").read_text())["where"]
        result = tmp_path / "device.json"
        proc = subprocess.run([sys.executable, str(out / "bundle" / "run_on_device.py"), "--bundle", str(out / "bundle"),
                               "--out", str(result), "--runs", "20", "--warmup", "2"], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        device = json.loads(result.read_text())
        assert device["runtime"] == "openvino" and device["latency"]["runs"] == 20
        assert device["runtime_details"]["properties"]["PERFORMANCE_HINT"] == "LATENCY"


@pytest.mark.slow
def test_both_runtimes_are_judged_and_timed_in_one_run(edgekd, cnn, tmp_path) -> None:
    target, profile = _target(tmp_path, "both", ["onnxruntime", "openvino"]), write(tmp_path / "fast.toml", FAST_PROFILE)
    run = edgekd("compile", str(cnn), "--target", str(target), "--profile", str(profile), out_dir=tmp_path / "b")
    assert run.code == 0, run.err
    jsonschema.validate(run.report, SCHEMA)
    tuning = run.report["tuning"]
    assert {"int8-qdq", "fp32", "openvino-fp32", "openvino-int8-nncf"} <= set(tuning["variants"])
    candidates = _tuning_rows(tuning)
    assert {r["runtime"] for r in candidates} == {"onnxruntime", "openvino"}
    from edgekd.backends.openvino.settings import settings_space

    expected = 2 * len(settings_space([1, 0]))  # 2 variants x threads {1, all} x hints (bf16 too where the host has it)
    assert len([r for r in candidates if r["runtime"] == "openvino"]) == expected
    for row in tuning["rows"]:
        assert "accuracy" in row and row["p90_ms"] > 0
    assert "ONNX Runtime session settings" in tuning["how"] and "OpenVINO" in tuning["how"]
    engine = json.loads((run.out_dir / "engine.json").read_text())
    assert engine["runtime"] == ("openvino" if tuning["rows"][tuning["chosen"]]["runtime"] == "openvino" else "onnxruntime-cpu")


@pytest.mark.slow
def test_without_openvino_the_candidates_are_left_out_with_a_note(edgekd, cnn, tmp_path, monkeypatch) -> None:
    from edgekd.backends.openvino import runtime

    monkeypatch.setattr(runtime, "missing", lambda: "OpenVINO candidates left out: the Python package 'openvino' is not importable (test)")
    target, profile = _target(tmp_path, "no-ov", ["onnxruntime", "openvino"]), write(tmp_path / "fast.toml", FAST_PROFILE)
    run = edgekd("compile", str(cnn), "--target", str(target), "--profile", str(profile), out_dir=tmp_path / "b")
    assert run.code == 0, run.err
    tuning = run.report["tuning"]
    assert not any(r["runtime"] == "openvino" for r in _tuning_rows(tuning))
    assert any(note.startswith("OpenVINO candidates left out") for note in tuning["left_out"])
    assert json.loads((run.out_dir / "engine.json").read_text())["runtime"] == "onnxruntime-cpu"


def _whole_map_pool(path: Path) -> Path:
    """HF EfficientNet's pooler in miniature: AvgPool2d(8, ceil_mode=True) over a 2x2 map, then a Mul
    (the graph is not only the pool)."""
    import onnx
    from onnx import TensorProto, helper

    pool = helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[8, 8], strides=[8, 8], ceil_mode=1)
    scale = helper.make_node("Mul", ["p", "two"], ["y"])
    graph = helper.make_graph([pool, scale], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_graph_openvino_refuses_is_said_not_raised(cnn, tmp_path) -> None:
    """An AveragePool whose kernel exceeds its input (ceil_mode; HF EfficientNet's pooler is one) runs on
    ONNX Runtime, not on OpenVINO: the trial run returns why (the candidates are left out with it)."""
    from types import SimpleNamespace

    from edgekd.backends.openvino.variants import trial_run

    ctx = SimpleNamespace(eval_feeds=SimpleNamespace(first=lambda: {"x": np.ones((1, 4, 2, 2), np.float32)}))
    reason = trial_run(ctx, _whole_map_pool(tmp_path / "pool.onnx"))
    assert reason and "AveragePool" in reason and not reason.startswith("Exception from")
    good = SimpleNamespace(eval_feeds=SimpleNamespace(first=lambda: {n: a[:1] for n, a in _feeds(cnn, 1).items()}))
    assert trial_run(good, cnn) is None


def test_the_openvino_candidates_run_the_legalized_graph(tmp_path) -> None:
    """The tuner gives OpenVINO the graph after edgekd.graph.legalize (the whole-map AveragePool as
    GlobalAveragePool): OpenVINO then runs it, with ONNX Runtime's numbers on the given graph, and the
    candidate says which rewrite it ran."""
    from types import SimpleNamespace

    import onnxruntime as ort

    from edgekd.backends.openvino.runtime import OpenVinoRunner
    from edgekd.backends.openvino.settings import OpenVinoSettings
    from edgekd.backends.openvino.variants import openvino_variants
    from edgekd.graph.resolve import load_inputs

    given = _whole_map_pool(tmp_path / "pool.onnx")
    x = np.random.default_rng(0).standard_normal((1, 4, 2, 2)).astype(np.float32)
    ctx = SimpleNamespace(eval_feeds=SimpleNamespace(first=lambda: {"x": x}), model_inputs=load_inputs(given),
                          target=SimpleNamespace(tune=SimpleNamespace(precisions=["fp32"])))
    (tmp_path / "out").mkdir()
    rows, notes = openvino_variants(ctx, given, tmp_path / "out")
    assert notes == [] and len(rows) == 1
    precision, _, model, how = rows[0]
    assert precision == "fp32" and model != given and model.parent == tmp_path / "out"
    assert "AveragePool" in how and "GlobalAveragePool" in how
    expected = ort.InferenceSession(str(given), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(OpenVinoRunner(model, OpenVinoSettings()).run({"x": x})[0], expected, rtol=1e-5)
    np.testing.assert_allclose(expected.ravel(), 2 * x.mean(axis=(2, 3)).ravel(), rtol=1e-5)
