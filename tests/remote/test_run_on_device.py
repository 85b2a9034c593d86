"""edgekd/deploy/run_on_device.py, the standalone device-side runner: run as a script on this host
(onnxruntime CPU for real, QNN HTP through onnxruntime-qnn's x86 emulator when installed), its
error paths, and the TensorRT path up to trtexec (with a stand-in trtexec; TensorRT is not here)."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import edgekd.bench

RUNNER = Path(edgekd.bench.__file__).parent / "deploy" / "run_on_device.py"
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


def write_bundle(bundle: Path, **fields: Any) -> Path:
    spec = {"runtime": "onnxruntime-cpu", "model": "model.onnx", "input_shape": [1, 8], "input_name": "input",
            "session": {"intra_op_num_threads": 1}, "target": "x86-test", **fields}
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "bundle.json").write_text(json.dumps(spec))
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


def test_imports_only_stdlib_numpy_and_runtimes() -> None:
    tree = ast.parse(RUNNER.read_text())
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    # no edgekd: the device has none. onnxruntime(_qnn) are imported by name when a runtime needs them
    assert names - set(sys.stdlib_module_names) == {"numpy"}


def test_summarize_matches_the_host_bench(runner_module: ModuleType) -> None:
    samples = list(np.random.default_rng(1).gamma(2.0, 0.5, 257))
    assert runner_module.summarize(samples) == edgekd.bench.summarize(samples)


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
    bundle = write_bundle(tmp_path / "bundle", input_shape=[3, 8])
    tiny_model(bundle / "model.onnx")
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), "--runs", "40", "--warmup", "3")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["schema"] == "edgekd-device-result/1"
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


# ------------------------------------------------------------------ errors


def test_missing_model_is_one_line_and_leaves_no_stale_result(tmp_path: Path) -> None:
    bundle = write_bundle(tmp_path / "bundle")
    out = tmp_path / "r.json"
    out.write_text("{\"old\": true}")
    proc = run_script("--bundle", str(bundle), "--out", str(out))
    assert_one_line_error(proc, 2, "model 'model.onnx' not found")
    assert not out.exists()


@pytest.mark.parametrize("fields, needle", [
    ({"runtime": "tflite"}, "'runtime' is 'tflite'"),
    ({"input_shape": [1, -8]}, "'input_shape'"),
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
    bundle = write_bundle(tmp_path / "bundle", input_name="pixels")
    tiny_model(bundle / "model.onnx")
    assert_one_line_error(run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json")), 2, "'pixels'", "'input'")


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


def tensorrt_bundle(tmp_path: Path, **fields: Any) -> Path:
    bundle = write_bundle(tmp_path / "bundle", runtime="tensorrt", engine="model.plan", **fields)
    tiny_model(bundle / "model.onnx")
    (bundle / "build_engine.sh").write_text('set -euo pipefail\n"$TRTEXEC" --onnx=model.onnx --saveEngine=model.plan\n')
    return bundle


def test_tensorrt_without_trtexec_is_a_clear_error(tmp_path: Path) -> None:
    bundle = tensorrt_bundle(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), env={**os.environ, "PATH": str(empty)})
    assert_one_line_error(proc, 3, "trtexec not found on PATH or at /usr/src/tensorrt/bin/trtexec", "JetPack")


TRTEXEC_HELPER = Path(edgekd.bench.__file__).parent / "backends" / "trtexec.py"  # copied into TensorRT bundles

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
    None,  # no measure.argv in bundle.json: the runner's own --loadEngine command
    {"argv": ["trtexec", "--loadEngine=model.plan", "--useDLACore=0", "--percentile=90,95,99", "--warmUp=300",
              "--exportTimes=times.json", "--separateProfileRun"], "export_times": "times.json"},
])
def test_tensorrt_path_with_a_stand_in_trtexec(tmp_path: Path, measure: dict[str, Any] | None) -> None:
    """A fake trtexec checks the runner's side of the contract with edgekd's real trtexec.py:
    build_engine.sh runs with $TRTEXEC, trtexec gets an argv list (the bundle's, with this device's
    trtexec), and samples come from --exportTimes."""
    if not TRTEXEC_HELPER.is_file():
        pytest.skip("edgekd/backends/trtexec.py is not in this tree")
    bundle = tensorrt_bundle(tmp_path, **({"measure": measure} if measure else {}))
    (bundle / "trtexec.py").write_text(TRTEXEC_HELPER.read_text())
    env = fake_trtexec_env(tmp_path, f"#!{sys.executable}\n{FAKE_TRTEXEC}")
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), "--runs", "25", env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["runtime"] == "tensorrt" and result["runtime_version"] == "TensorRT 10.3.0"
    latency = result["latency"]
    assert set(latency) == LATENCY_KEYS and latency["runs"] == 25 and latency["samples_ms"][0] == 0.5
    assert latency["intra_op_threads"] is None and latency["peak_rss_mb"] is None
    assert result["runtime_details"]["trtexec_summary"]["throughput_qps"] == 1990.5
    build, load = (json.loads(line) for line in (bundle / "trtexec_calls.txt").read_text().splitlines())
    assert build == ["--onnx=model.onnx", "--saveEngine=model.plan"]
    tail = ["--iterations=25", "--duration=0", "--exposeDMA"]
    if measure is None:
        assert load == ["--loadEngine=model.plan", "--percentile=90,95,99", "--shapes=input:1x8", *tail, "--exportTimes=times.json"]
    else:
        assert load == measure["argv"][1:] + tail


@pytest.mark.parametrize("code, runner_code", [(3, 3), (1, 4)])
def test_tensorrt_failed_engine_build(tmp_path: Path, code: int, runner_code: int) -> None:
    bundle = tensorrt_bundle(tmp_path)
    (bundle / "trtexec.py").write_text("")
    (bundle / "build_engine.sh").write_text(f"echo 'building' && echo 'error: unsupported op DFT' >&2\nexit {code}\n")
    env = fake_trtexec_env(tmp_path, "#!/bin/sh\nexit 0\n")
    proc = run_script("--bundle", str(bundle), "--out", str(tmp_path / "r.json"), env=env)
    assert_one_line_error(proc, runner_code, f"build_engine.sh exited {code}: error: unsupported op DFT", "build_engine.log")
