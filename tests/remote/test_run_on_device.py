"""edgekd/deploy/run_on_device.py, the standalone device-side runner: run as a script on this host
(onnxruntime CPU for real, QNN HTP through onnxruntime-qnn's x86 emulator when installed), its
error paths, and the TensorRT path up to trtexec (with a stand-in trtexec; TensorRT is not here)."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import edgekd
from edgekd.graph.inputs import ResolvedInput

RUNNER = Path(edgekd.__file__).parent / "deploy" / "run_on_device.py"
FEEDGEN = Path(edgekd.__file__).parent / "graph" / "feedgen.py"
LATENCY_KEYS = {"runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput_per_s",
                "samples_ms", "batch", "intra_op_threads", "peak_rss_mb", "engine_rss_mb"}


def tiny_model(path: Path, features: int = 8, classes: int = 4) -> Path:
    """A one-Gemm ONNX classifier with a dynamic batch, made with onnx.helper."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "B")
    graph = helper.make_graph([helper.make_node("Gemm", ["input", "W", "B"], ["output"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", classes])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def float_input(batch: int = 1, name: str = "input", dtype: str = "float32") -> dict[str, Any]:
    """tiny_model's input as bundle.json records it (ResolvedInput.to_json())."""
    return ResolvedInput(name, dtype, (batch, 8), "float", ("batch", "model"), batch_axis=0).to_json()


def write_bundle(bundle: Path, **fields: Any) -> Path:
    """bundle.json (format 2) by hand, so that tests can break any field, and feedgen.py beside it."""
    spec = {"format": "edgekd-ort-bundle/2", "runtime": "onnxruntime-cpu", "model": "model.onnx",
            "inputs": [float_input()], "feedgen": "feedgen.py", "session": {"intra_op_num_threads": 1},
            "target": "x86-test", **fields}
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "bundle.json").write_text(json.dumps(spec))
    shutil.copyfile(FEEDGEN, bundle / "feedgen.py")
    return bundle


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, env=env, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_on_device: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def runner_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_on_device_under_test", RUNNER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


# ------------------------------------------------------------------ standalone


@pytest.mark.parametrize("script", [RUNNER, FEEDGEN])
def test_imports_only_stdlib_numpy_and_runtimes(script: Path) -> None:
    """The runner and the feedgen.py every bundle carries run where edgekd is not installed, on Python >= 3.8."""
    tree = ast.parse(script.read_text(), feature_version=(3, 8))
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    # no edgekd: the device has none. onnxruntime(_qnn) are imported by name when a runtime needs them
    assert names - set(sys.stdlib_module_names) == {"numpy"}


def test_summarize_matches_the_host_bench(runner_module: ModuleType) -> None:
    samples = list(np.random.default_rng(1).gamma(2.0, 0.5, 257))
    assert runner_module.summarize(samples) == edgekd.perf.measure.summarize(samples)


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
    assert manifest["format"] == "edgekd-ort-bundle/2" and manifest["inputs"] == [i.to_json() for i in inputs.inputs]
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
    ({"format": None}, "bundle format None is not one this runner reads (edgekd-ort-bundle/2, edgekd-tensorrt-bundle/2); rebuild"),
    ({"format": "edgekd-ort-bundle/1"}, "bundle format 'edgekd-ort-bundle/1' is not one this runner reads"),
    ({"runtime": "tflite"}, "'runtime' is 'tflite'"),
    ({"runtime": "tensorrt"}, "a edgekd-ort-bundle/2 bundle runs onnxruntime-cpu or qnn-htp"),
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


# ------------------------------------------------------------------ TensorRT


MEASURE = {"argv": ["trtexec", "--loadEngine=model.plan", "--percentile=90,95,99", "--shapes=input:1x8",
                    "--loadInputs=input:inputs/00_input.bin", "--exportTimes=times.json", "--separateProfileRun"],
           "export_times": "times.json", "input_files": {"input": "inputs/00_input.bin"}}


def tensorrt_bundle(tmp_path: Path, **fields: Any) -> Path:
    """A hand-written TensorRT bundle (format 2); tests/deploy/test_tensorrt_bundle.py runs the
    runner on bundles that edgekd.deploy.tensorrt_bundle writes."""
    fields = {"format": "edgekd-tensorrt-bundle/2", "runtime": "tensorrt", "engine": "model.plan", "measure": MEASURE, **fields}
    bundle = write_bundle(tmp_path / "bundle", **fields)
    (bundle / "inputs").mkdir()
    (bundle / "inputs" / "00_input.bin").write_bytes(np.zeros(8, np.float32).tobytes())
    tiny_model(bundle / "model.onnx")
    (bundle / "build_engine.sh").write_text('set -euo pipefail\n"$TRTEXEC" --onnx=model.onnx --saveEngine=model.plan\n')
    return bundle


def test_tensorrt_without_trtexec_is_a_clear_error(tmp_path: Path) -> None:
    bundle = tensorrt_bundle(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), env={**os.environ, "PATH": str(empty)})
    assert_one_line_error(proc, 3, "trtexec not found on PATH or at /usr/src/tensorrt/bin/trtexec", "JetPack")


TRTEXEC_HELPER = Path(edgekd.__file__).parent / "backends" / "tensorrt" / "trtexec.py"  # copied into TensorRT bundles

# Stands in for trtexec: records its argv, writes --saveEngine / --exportTimes like TensorRT 10, and
# prints the lines of a real log that edgekd's trtexec.py parses.
FAKE_TRTEXEC = r'''
import json, sys
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
open("trtexec_calls.txt", "a").write(json.dumps(sys.argv[1:]) + "\n")
print("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec")
if "saveEngine" in args:
    open(args["saveEngine"], "wb").write(b"plan")
else:
    n = int(args["iterations"])
    json.dump([{"startComputeMs": i, "computeMs": 0.4, "latencyMs": 0.5 + i / 1000} for i in range(n)], open(args["exportTimes"], "w"))
    print("[07/02/2026-03:47:08] [I] === Performance summary ===")
    print("[07/02/2026-03:47:08] [I] Throughput: 1990.5 qps")
    print("[07/02/2026-03:47:08] [I] Latency: min = 0.5 ms, max = 0.524 ms, mean = 0.512 ms, median = 0.512 ms, "
          "percentile(90%) = 0.522 ms, percentile(95%) = 0.523 ms, percentile(99%) = 0.524 ms")
    print("&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec")
'''


def fake_trtexec_env(tmp_path: Path, script: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text(script)
    (bin_dir / "trtexec").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("measure", [
    MEASURE,
    {**MEASURE, "argv": ["trtexec", "--loadEngine=model.plan", "--useDLACore=0", "--percentile=90,95,99", "--warmUp=300",
                         "--exportTimes=times.json", "--separateProfileRun"], "input_files": {}},
])
def test_tensorrt_path_with_a_stand_in_trtexec(tmp_path: Path, measure: dict[str, Any]) -> None:
    """A fake trtexec checks the runner's side of the contract with edgekd's real trtexec.py:
    build_engine.sh runs with $TRTEXEC, trtexec gets an argv list (the bundle's, with this device's
    trtexec), and samples come from --exportTimes."""
    if not TRTEXEC_HELPER.is_file():
        pytest.skip("edgekd/backends/tensorrt/trtexec.py is not in this tree")
    bundle = tensorrt_bundle(tmp_path, measure=measure)
    (bundle / "trtexec.py").write_text(TRTEXEC_HELPER.read_text())
    env = fake_trtexec_env(tmp_path, f"#!{sys.executable}\n{FAKE_TRTEXEC}")
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), "--runs", "25", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["runtime"] == "tensorrt" and result["runtime_version"] == "TensorRT 10.3.0"
    latency = result["latency"]
    assert set(latency) == LATENCY_KEYS and latency["runs"] == 25 and latency["samples_ms"][0] == 0.5
    assert latency["intra_op_threads"] is None and latency["peak_rss_mb"] is None and latency["batch"] == 1
    assert result["runtime_details"]["trtexec_summary"]["throughput_qps"] == 1990.5
    build, load = (json.loads(line) for line in (bundle / "trtexec_calls.txt").read_text().splitlines())
    assert build == ["--onnx=model.onnx", "--saveEngine=model.plan"]
    assert load == measure["argv"][1:] + ["--iterations=25", "--duration=0", "--exposeDMA"]


@pytest.mark.parametrize("measure, needle", [
    (None, "measure.argv must be a non-empty list of strings (the trtexec command); rebuild the bundle"),
    ({**MEASURE, "input_files": {"pixels": "inputs/00_input.bin"}}, "measure.input_files must map input names (input)"),
    ({**MEASURE, "input_files": {"input": "inputs/gone.bin"}}, "input file of 'input' 'inputs/gone.bin' not found in bundle"),
])
def test_tensorrt_bad_measure(tmp_path: Path, measure: dict[str, Any] | None, needle: str) -> None:
    bundle = tensorrt_bundle(tmp_path, measure=measure)
    (bundle / "trtexec.py").write_text(TRTEXEC_HELPER.read_text())
    env = fake_trtexec_env(tmp_path, f"#!{sys.executable}\n{FAKE_TRTEXEC}")
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), env=env), 2, needle)
    assert not (bundle / "trtexec_calls.txt").exists()  # refused before the engine build, which takes minutes on a device


@pytest.mark.parametrize("code, runner_code", [(3, 3), (1, 4)])
def test_tensorrt_failed_engine_build(tmp_path: Path, code: int, runner_code: int) -> None:
    bundle = tensorrt_bundle(tmp_path)
    (bundle / "trtexec.py").write_text("")
    (bundle / "build_engine.sh").write_text(f"echo 'building' && echo 'error: unsupported op DFT' >&2\nexit {code}\n")
    env = fake_trtexec_env(tmp_path, "#!/bin/sh\nexit 0\n")
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), env=env)
    assert_one_line_error(proc, runner_code, f"build_engine.sh exited {code}: error: unsupported op DFT", "build_engine.log")
