"""edgekd/deploy/run_on_device.py, the standalone device-side runner (with device_runtimes.py, which
it loads from the bundle): run as a script on this host (onnxruntime CPU for real, QNN HTP through
onnxruntime-qnn's x86 emulator when installed) and its error paths. The TensorRT path is in
test_run_on_device_tensorrt.py."""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from runner_bundles import (
    FEEDGEN,
    LATENCY_KEYS,
    RUNNER,
    RUNTIMES,
    assert_one_line_error,
    float_input,
    run_script,
    tensorrt_bundle,
    tiny_model,
    write_bundle,
)


@pytest.fixture(scope="module")
def runner_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_on_device_under_test", RUNNER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module



# ------------------------------------------------------------------ standalone


@pytest.mark.parametrize("script", [RUNNER, RUNTIMES, FEEDGEN])
def test_imports_only_stdlib_numpy_and_runtimes(script: Path) -> None:
    """The runner, and the device_runtimes.py and feedgen.py every bundle carries, run where edgekd
    is not installed, on Python >= 3.8."""
    tree = ast.parse(script.read_text(), feature_version=(3, 8))
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    # no edgekd: the device has none. onnxruntime(_qnn) are imported by name when a runtime needs them
    assert names - set(sys.stdlib_module_names) == {"numpy"}


def test_summarize_matches_the_host_bench(runner_module: ModuleType) -> None:
    from edgekd.perf.measure import (
        summarize,  # imported here: not a side effect of other tests' imports
    )

    samples = list(np.random.default_rng(1).gamma(2.0, 0.5, 257))
    assert runner_module.summarize(samples) == summarize(samples)


def test_device_info_on_a_jetson(runner_module: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = {"/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit",
             "/etc/nv_tegra_release": "# R36 (release), REVISION: 4.0, GCID: 1, BOARD: generic, EABI: aarch64\nx"}
    monkeypatch.setattr(runner_module, "_read_text", lambda path: files.get(path))
    nvpmodel = tmp_path / "nvpmodel"
    nvpmodel.write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    nvpmodel.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    info = runner_module.device_info()
    assert info["model"] == "NVIDIA Jetson AGX Orin Developer Kit" and info["power_mode"] == "MAXN"
    assert info["nv_tegra_release"].startswith("# R36 (release), REVISION: 4.0")


# ------------------------------------------------------------------ onnxruntime CPU, for real


def test_onnxruntime_cpu_measures_for_real(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle", inputs=[float_input(batch=3)])
    tiny_model(bundle / "model.onnx")
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), "--runs", "40", "--warmup", "3")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["schema"] == "edgekd-device-result/2"
    assert result["inputs"] == [{"name": "input", "dtype": "float32", "shape": [3, 8], "role": "float"}]
    assert result["runtime"] == "onnxruntime-cpu" and result["runtime_version"].startswith("onnxruntime 1.")
    assert result["target"] == "x86-test" and result["measured_at"].endswith("+00:00")
    assert {"hostname", "machine", "os", "cpu", "cores", "python"} <= set(result["device"])
    latency = result["latency"]
    assert set(latency) == LATENCY_KEYS
    assert latency["runs"] == len(latency["samples_ms"]) == 40 and latency["batch"] == 3
    assert latency["intra_op_threads"] == 1
    assert 0 < latency["min_ms"] <= latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["peak_rss_mb"] > 0
    assert not list(tmp_path.glob(".r.json.*"))  # the temp file was renamed


def test_multi_input_bert_bundle(zoo: Any, tmp_path: Path, runner_module: ModuleType) -> None:
    """A tiny BERT (optimum export: input_ids, attention_mask, token_type_ids, int64) in a real ORT
    bundle: the runner feeds all three from the bundle's feedgen.py, the same values edgekd makes."""
    from edgekd.deploy.ort_bundle import write_ort_bundle
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.resolve import load_inputs

    model = zoo("bert")
    inputs = load_inputs(model)
    bundle = tmp_path / "bundle"
    write_ort_bundle(bundle, "onnxruntime-cpu", [model], "x86-test", inputs, session={"intra_op_num_threads": 1})
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["format"] == "edgekd-ort-bundle/3" and manifest["inputs"] == [i.to_json() for i in inputs.inputs]
    assert (bundle / "feedgen.py").read_bytes() == FEEDGEN.read_bytes()  # a copy, not a second generator
    feeds = runner_module.make_feeds(bundle, manifest)
    expected = make_feeds(inputs)
    assert list(feeds) == ["input_ids", "attention_mask", "token_type_ids"]
    for name, array in feeds.items():
        assert array.dtype == np.int64 and array.shape == (1, 128) and np.array_equal(array, expected[name])
    assert 0 <= feeds["input_ids"].min() and feeds["input_ids"].max() < inputs.inputs[0].vocab_size
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()

    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), "--runs", "5", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert [(i["name"], i["dtype"], i["shape"]) for i in result["inputs"]] == [
        ("input_ids", "int64", [1, 128]), ("attention_mask", "int64", [1, 128]), ("token_type_ids", "int64", [1, 128])]
    latency = result["latency"]
    assert latency["runs"] == len(latency["samples_ms"]) == 5 and latency["batch"] == 1 and latency["min_ms"] > 0


@pytest.mark.parametrize("arch", ["gpt2", "vit"])
def test_real_models_through_the_runner(zoo: Any, tmp_path: Path, arch: str) -> None:
    """GPT-2 with past key/values (empty at past length 0, positions, mask) and ViT (pixel_values)
    exported by optimum: every input fed, nothing else to configure."""
    from edgekd.deploy.ort_bundle import write_ort_bundle
    from edgekd.graph.resolve import load_inputs

    model = zoo(arch)
    inputs = load_inputs(model)
    write_ort_bundle(tmp_path / "bundle", "onnxruntime-cpu", [model], "x86-test", inputs, session={"intra_op_num_threads": 1})
    proc = run_script("--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "r.json"), "--runs", "3", "--warmup", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert [(i["name"], i["shape"]) for i in result["inputs"]] == [(i.name, list(i.shape)) for i in inputs.inputs]
    assert result["latency"]["runs"] == 3 and result["latency"]["batch"] == 1


# ------------------------------------------------------------------ errors


def test_missing_model_is_one_line_and_leaves_no_stale_result(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    out = tmp_path / "r.json"
    out.write_text("{\"old\": true}")
    proc = run_script("--bundle", str(bundle), "--out", str(out))
    assert_one_line_error(proc, 2, "model 'model.onnx' not found")
    assert not out.exists()


@pytest.mark.parametrize("fields, needle", [
    ({"format": None}, "bundle format None is not one this runner reads (edgekd-ort-bundle/3, edgekd-tensorrt-bundle/3); rebuild"),
    ({"format": "edgekd-ort-bundle/1"}, "bundle format 'edgekd-ort-bundle/1' is not one this runner reads"),
    ({"format": "edgekd-ort-bundle/2"}, "bundle format 'edgekd-ort-bundle/2' is not one this runner reads"),  # no device_runtimes.py
    ({"runtime": "tflite"}, "'runtime' is 'tflite'"),
    ({"runtime": "tensorrt"}, "a edgekd-ort-bundle/3 bundle runs onnxruntime-cpu or qnn-htp"),
    ({"runtimes": "../device_runtimes.py"}, "device runtimes module '../device_runtimes.py' is outside the bundle"),
    ({"inputs": []}, "'inputs' must be a non-empty list"),
    ({"inputs": [{**float_input(), "shape": [1, -8]}]}, "inputs[0] ('input'): 'shape' must be a list of non-negative integers"),
    ({"inputs": [{**float_input(), "dtype": "floaty"}]}, "'dtype' 'floaty' is not a numpy dtype"),
    ({"inputs": [{**float_input(), "batch_axis": 2}]}, "'batch_axis' must be an axis of its shape"),
    ({"feedgen": "../feedgen.py"}, "feed generator '../feedgen.py' is outside the bundle"),
    ({"session": {"threads": 2}}, "unknown key(s) in 'session': threads"),
    ({"model": "../../etc/passwd"}, "outside the bundle"),
])
def test_bad_bundle_json(tmp_path: Path, fields: dict[str, Any], needle: str) -> None:
    bundle = write_bundle(tmp_path / "bundle", **fields)
    tiny_model(bundle / "model.onnx")
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json")), 2, needle)


def test_bad_arguments(tmp_path: Path) -> None:
    assert_one_line_error(run_script("--bundle", str(tmp_path)), 2, "--out", "usage:")
    assert_one_line_error(run_script("--bundle", str(tmp_path), "--out", "r.json", "--runs", "0"), 2, "--runs")


def test_model_onnxruntime_cannot_load_is_exit_4(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    (bundle / "model.onnx").write_bytes(b"not an onnx model")
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json")), 4, "onnxruntime could not load model.onnx")


def test_wrong_input_name(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle", inputs=[float_input(name="pixels")])
    tiny_model(bundle / "model.onnx")
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json")), 2,
                          "bundle.json records inputs pixels, but model.onnx has inputs input; rebuild the bundle")


def test_wrong_input_dtype(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle", inputs=[float_input(dtype="int64")])
    tiny_model(bundle / "model.onnx")
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json")), 2,
                          "input 'input' of model.onnx is tensor(float), but bundle.json records int64")


def test_broken_feedgen_copy(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    tiny_model(bundle / "model.onnx")
    (bundle / "feedgen.py").write_text("import nothing_of_this_name\n")
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json")), 2,
                          "feed generator 'feedgen.py' in bundle", "does not load", "rebuild the bundle")


def test_ort_bundle_carries_the_device_runtimes(tmp_path: Path) -> None:
    """write_ort_bundle copies device_runtimes.py beside the runner, names it in bundle.json and
    hashes it like feedgen.py; the runner measures with that copy."""
    from edgekd.deploy.ort_bundle import write_ort_bundle
    from edgekd.graph.resolve import load_inputs

    model = tiny_model(tmp_path / "model.onnx")
    bundle = tmp_path / "bundle"
    write_ort_bundle(bundle, "onnxruntime-cpu", [model], "x86-test", load_inputs(model), session={"intra_op_num_threads": 1})
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert (bundle / "run_on_device.py").read_bytes() == RUNNER.read_bytes()
    assert (bundle / "device_runtimes.py").read_bytes() == RUNTIMES.read_bytes()
    assert manifest["runtimes"] == "device_runtimes.py" and manifest["runner"] == "run_on_device.py"
    assert set(manifest["files"]) == {"model.onnx", "feedgen.py", "device_runtimes.py"}
    (bundle / "device_runtimes.py").write_text(RUNTIMES.read_text().replace(
        'f"onnxruntime {ort.__version__}"', 'f"bundle copy {ort.__version__}"'))
    proc = subprocess.run([sys.executable, str(bundle / "run_on_device.py"), "--bundle", str(bundle), "--out",
                           str(tmp_path / "r.json"), "--runs", "3", "--warmup", "0"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["runtime_version"].startswith("bundle copy ")


def test_job_gives_what_device_runtimes_uses(runner_module: ModuleType, tmp_path: Path) -> None:
    """device_runtimes.JobLike is the interface it uses of the runner's Job: Job has all of it."""
    spec = importlib.util.spec_from_file_location("device_runtimes_under_test", RUNTIMES)
    runtimes = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(runtimes)  # type: ignore[union-attr]
    methods = {name for name, value in vars(runtimes.JobLike).items() if callable(value) and not name.startswith("_")}
    wanted = set(runtimes.JobLike.__annotations__) | methods
    job = runner_module.Job(tmp_path, {"runtime": "tflite"}, 5, 1)
    assert wanted >= {"error", "file", "latency", "bundle", "EXIT_MISSING"} and not [n for n in wanted if not hasattr(job, n)]
    assert (job.EXIT_USER, job.EXIT_MISSING, job.EXIT_RUNTIME) == (2, 3, 4)
    error = job.error("onnxruntime could not load m.onnx", job.EXIT_RUNTIME, ValueError("bad graph\nmore"))
    assert isinstance(error, runner_module.RunnerError) and error.exit_code == 4
    assert str(error) == "onnxruntime could not load m.onnx: bad graph"
    with pytest.raises(runner_module.RunnerError, match="cannot measure runtime 'tflite'"):
        runtimes.measure(job)

@pytest.mark.parametrize("runtime", ["onnxruntime-cpu", "tensorrt"])
def test_missing_device_runtimes_is_one_line_naming_it(tmp_path: Path, runtime: str) -> None:
    bundle = tensorrt_bundle(tmp_path) if runtime == "tensorrt" else write_bundle(tmp_path / "bundle")
    tiny_model(bundle / "model.onnx")
    (bundle / "device_runtimes.py").unlink()
    out = tmp_path / "r.json"
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(out)), 2,
                          "device runtimes module 'device_runtimes.py' not found in bundle",
                          "this runner measures every runtime with it; rebuild the bundle")
    assert not out.exists()


@pytest.mark.parametrize("text, needle", [
    ("import nothing_of_this_name\n", "does not load (No module named 'nothing_of_this_name'); rebuild the bundle"),
    ("MEASURE = {}\n", "has no measure(job); rebuild the bundle"),
])
def test_broken_device_runtimes_copy(tmp_path: Path, text: str, needle: str) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    tiny_model(bundle / "model.onnx")
    (bundle / "device_runtimes.py").write_text(text)
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json")), 2,
                          "device runtimes module 'device_runtimes.py' in bundle", needle)


def test_missing_qnn_package_is_exit_3(runner_module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # import fails as if not installed
    bundle = write_bundle(tmp_path / "bundle", runtime="qnn-htp", model="model_ctx.onnx")
    assert runner_module.main(["--bundle", str(bundle), "--out", str(tmp_path / "r.json")]) == 3
    assert "pip install onnxruntime-qnn" in capsys.readouterr().err


# ------------------------------------------------------------------ QNN HTP (x86 emulator), for real


def test_qnn_htp_context_model(tmp_path: Path) -> None:
    qnn = pytest.importorskip("onnxruntime_qnn")
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({"input": x} for x in np.random.default_rng(0).standard_normal((8, 1, 8)).astype(np.float32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    fp32 = tiny_model(tmp_path / "fp32.onnx")
    # HTP needs static shapes: fix the batch at 1 before quantizing
    import onnx
    model = onnx.load(str(fp32))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(fp32))
    bundle = write_bundle(tmp_path / "bundle", runtime="qnn-htp", model="model_ctx.onnx", qnn={"htp_performance_mode": "burst"})
    quantize(str(fp32), str(tmp_path / "qdq.onnx"),
             get_qnn_qdq_config(str(fp32), Reader(), activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8))
    if not any(d.ep_name == "QNNExecutionProvider" for d in ort.get_ep_devices()):  # other tests may have
        ort.register_execution_provider_library("QNNExecutionProvider", qnn.get_library_path())
    device = next(d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    for key, value in {"ep.context_enable": "1", "ep.context_file_path": str(bundle / "model_ctx.onnx"), "ep.context_embed_mode": "0"}.items():
        opts.add_session_config_entry(key, value)
    opts.add_provider_for_devices([device], {"backend_path": qnn.get_qnn_htp_path()})
    ort.InferenceSession(str(tmp_path / "qdq.onnx"), opts)  # writes model_ctx.onnx + its .bin

    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), "--runs", "20", "--warmup", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    details = result["runtime_details"]
    assert "QNNExecutionProvider" in details["providers"] and "onnxruntime-qnn" in result["runtime_version"]
    assert details["qnn_provider_options"]["htp_performance_mode"] == "burst"
    assert details["htp_emulated"] == (result["device"]["machine"] in ("x86_64", "AMD64"))
    assert len(result["latency"]["samples_ms"]) == 20
