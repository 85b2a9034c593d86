"""Bundles by hand for the device-side runner's tests (test_run_on_device.py, and
test_run_on_device_tensorrt.py): bundle.json written field by field, so that a test can break any
of them, with the runner's helper modules (feedgen.py, device_runtimes.py) copied beside it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import edgekd
from edgekd.graph.inputs import ResolvedInput

RUNNER = Path(edgekd.__file__).parent / "deploy" / "run_on_device.py"
RUNTIMES = Path(edgekd.__file__).parent / "deploy" / "device_runtimes.py"
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
    """bundle.json (format 3) by hand, so that tests can break any field, and feedgen.py and
    device_runtimes.py beside it."""
    spec = {"format": "edgekd-ort-bundle/3", "runtime": "onnxruntime-cpu", "model": "model.onnx",
            "inputs": [float_input()], "feedgen": "feedgen.py", "runtimes": "device_runtimes.py",
            "session": {"intra_op_num_threads": 1}, "target": "x86-test", **fields}
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "bundle.json").write_text(json.dumps(spec))
    shutil.copyfile(FEEDGEN, bundle / "feedgen.py")
    shutil.copyfile(RUNTIMES, bundle / "device_runtimes.py")
    return bundle


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, env=env, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_on_device: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]



MEASURE = {"argv": ["trtexec", "--loadEngine=model.plan", "--percentile=90,95,99", "--shapes=input:1x8",
                    "--loadInputs=input:inputs/00_input.bin", "--exportTimes=times.json", "--separateProfileRun"],
           "export_times": "times.json", "input_files": {"input": "inputs/00_input.bin"}}


def tensorrt_bundle(tmp_path: Path, **fields: Any) -> Path:
    """A hand-written TensorRT bundle (format 3); tests/deploy/test_tensorrt_bundle.py runs the
    runner on bundles that edgekd.deploy.tensorrt_bundle writes."""
    fields = {"format": "edgekd-tensorrt-bundle/3", "runtime": "tensorrt", "engine": "model.plan", "measure": MEASURE, **fields}
    bundle = write_bundle(tmp_path / "bundle", **fields)
    (bundle / "inputs").mkdir()
    (bundle / "inputs" / "00_input.bin").write_bytes(np.zeros(8, np.float32).tobytes())
    tiny_model(bundle / "model.onnx")
    (bundle / "build_engine.sh").write_text('set -euo pipefail\n"$TRTEXEC" --onnx=model.onnx --saveEngine=model.plan\n')
    return bundle
