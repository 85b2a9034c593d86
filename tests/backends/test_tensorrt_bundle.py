"""edgekd/deploy/tensorrt_bundle.py: the files, the manifest, and build_engine.sh itself (syntax,
quoting, version check), run against a fake trtexec whose --help is real `trtexec --help` output."""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.backends import trtexec
from edgekd.backends.tensorrt_config import TensorRTConfig
from edgekd.deploy import tensorrt_bundle as tb
from edgekd.errors import EdgekdError
from edgekd.fsutil import sha256_file

DATA = Path(__file__).parent / "data"
HELP_TRT10_6 = DATA / "trtexec_10.6_help_head.txt"
DLA = TensorRTConfig(trt_major=10, jetpack="6.2", dla_core=0, gpu_fallback=True, also_fp16=True, power_mode="MAXN")
BASH = shutil.which("bash")


def qdq_conv(path: Path, input_name: str = "x", batch: int | str = "N", zero_point: int = 0) -> Path:
    """x -> Q/DQ (int8) -> Conv (int8 weights through DQ, float bias) -> Relu -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(zero_point, np.int8), "zp"),
             numpy_helper.from_array(rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8), "w_q"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ws"), numpy_helper.from_array(np.array(0, np.int8), "wzp"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    nodes = [helper.make_node("QuantizeLinear", [input_name, "s", "zp"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "wzp"], ["w"], name="dq_w"),
             helper.make_node("Conv", ["xd", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def fake_trtexec(tmp_path: Path, help_text: Path = HELP_TRT10_6) -> Path:
    """trtexec stand-in: `--help` prints real trtexec --help output; a build records its argv
    (one per line) and writes a non-empty model.plan."""
    exe = tmp_path / "fakebin" / "trtexec"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text(f"""#!/bin/sh
if [ "$1" = "--help" ]; then cat '{help_text}'; exit 0; fi
for a in "$@"; do printf '%s\\n' "$a"; done > argv.txt
printf engine > model.plan
""")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def run_script(bundle: Path, trtexec_path: Path | str) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(bundle / tb.SCRIPT)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "TRTEXEC": str(trtexec_path)}, check=False)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    tb.write_bundle(qdq_conv(tmp_path / "int8.onnx"), tmp_path / "bundle", DLA, "jetson-orin-nx", (1, 3, 8, 8))
    return tmp_path / "bundle"


def test_files_and_manifest(bundle: Path, tmp_path: Path):
    assert sorted(p.name for p in bundle.iterdir()) == sorted([tb.MODEL, tb.SCRIPT, tb.HELPER, tb.MANIFEST])
    manifest = json.loads((bundle / tb.MANIFEST).read_text())
    assert manifest["runtime"] == "tensorrt" and manifest["target"] == "jetson-orin-nx" and manifest["runner"] == "run_on_device.py"
    assert manifest["model"] == tb.MODEL and manifest["engine"] == tb.ENGINE
    assert (manifest["input_name"], manifest["input_shape"], manifest["input_dynamic_in_model"]) == ("x", [1, 3, 8, 8], True)
    assert manifest["model_sha256"] == sha256_file(tmp_path / "int8.onnx") == sha256_file(bundle / tb.MODEL)
    assert manifest["files"] == {name: sha256_file(bundle / name) for name in (tb.MODEL, tb.SCRIPT, tb.HELPER)}
    assert manifest["tensorrt"]["dla_core"] == 0 and manifest["tensorrt"]["min_trt_version"] == "10.0.0"
    assert manifest["build"]["argv"] == trtexec.build_command(tb.MODEL, tb.ENGINE, DLA.model_dump(), input_shapes={"x": (1, 3, 8, 8)},
                                                              timing_cache=tb.TIMING_CACHE)
    assert "--exportTimes=times.json" in manifest["measure"]["argv"] and "--useDLACore=0" in manifest["measure"]["argv"]
    assert (bundle / tb.HELPER).read_text() == Path(trtexec.__file__).read_text()
    assert (bundle / tb.SCRIPT).stat().st_mode & stat.S_IXUSR


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_script_is_valid_bash_with_each_argument_quoted(bundle: Path):
    script = (bundle / tb.SCRIPT).read_text()
    assert subprocess.run([BASH, "-n", str(bundle / tb.SCRIPT)], capture_output=True).returncode == 0
    assert script.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in script
    argv = json.loads((bundle / tb.MANIFEST).read_text())["build"]["argv"]
    block = script.split("cmd=(\n", 1)[1].split("\n)\n", 1)[0].splitlines()
    assert block == ['  "$TRTEXEC"'] + [f"  {tb.shlex.quote(a)}" for a in argv[1:]]


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_script_runs_trtexec_with_exactly_the_build_arguments(tmp_path: Path):
    # an input name trtexec must see quoted ('in put:0') and the shell must not split
    model = qdq_conv(tmp_path / "odd.onnx", input_name="in put:0")
    tb.write_bundle(model, tmp_path / "b", DLA, "orin", (2, 3, 8, 8))
    proc = run_script(tmp_path / "b", fake_trtexec(tmp_path))
    assert proc.returncode == 0, proc.stderr
    argv = json.loads((tmp_path / "b" / tb.MANIFEST).read_text())["build"]["argv"]
    assert (tmp_path / "b" / "argv.txt").read_text().splitlines() == argv[1:]
    assert "--shapes='in put:0':2x3x8x8" in argv


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_script_refuses_another_tensorrt_major(tmp_path: Path):
    cfg = TensorRTConfig(trt_major=11)
    tb.write_bundle(qdq_conv(tmp_path / "m.onnx"), tmp_path / "b", cfg, "thor", (1, 3, 8, 8))
    proc = run_script(tmp_path / "b", fake_trtexec(tmp_path))  # trtexec --help says TensorRT v100600
    assert proc.returncode == 3
    assert "target thor needs TensorRT 11.x >= 11.0.0, but" in proc.stderr and "TensorRT v100600 (major 10)" in proc.stderr
    assert not (tmp_path / "b" / "argv.txt").exists()


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_script_without_trtexec(bundle: Path):
    proc = run_script(bundle, "/nonexistent/trtexec")
    assert proc.returncode == 3 and "error: trtexec not found" in proc.stderr


@pytest.mark.skipif(BASH is None or shutil.which("sha256sum") is None, reason="needs bash and sha256sum")
def test_script_refuses_a_changed_model(bundle: Path, tmp_path: Path):
    with open(bundle / tb.MODEL, "ab") as fh:
        fh.write(b"\0")
    proc = run_script(bundle, fake_trtexec(tmp_path))
    assert proc.returncode == 2 and "does not match the sha256" in proc.stderr


def test_static_model_gets_no_shapes(tmp_path: Path):
    tb.write_bundle(qdq_conv(tmp_path / "m.onnx", batch=1), tmp_path / "b", DLA, "orin", (1, 3, 8, 8))
    manifest = json.loads((tmp_path / "b" / tb.MANIFEST).read_text())
    assert manifest["input_dynamic_in_model"] is False
    assert not any(a.startswith("--shapes") for a in manifest["build"]["argv"] + manifest["measure"]["argv"])


@pytest.mark.parametrize("kwargs, match", [
    ({"target_name": "orin; rm -rf /"}, "not a plain name"),
    ({"input_shape": (1, 3, 8)}, "has rank 3"),
    ({"input_shape": (1, 4, 8, 8)}, "says 4 on axis 1"),
    ({"input_shape": (0, 3, 8, 8)}, "positive integers"),
])
def test_bad_arguments(tmp_path: Path, kwargs, match):
    args = {"target_name": "orin", "input_shape": (1, 3, 8, 8), **kwargs}
    with pytest.raises(EdgekdError, match=match):
        tb.write_bundle(qdq_conv(tmp_path / "m.onnx"), tmp_path / "b", DLA, **args)


def test_missing_model(tmp_path: Path):
    with pytest.raises(EdgekdError, match="does not exist"):
        tb.write_bundle(tmp_path / "nope.onnx", tmp_path / "b", DLA, "orin", (1, 3, 8, 8))


def test_asymmetric_qdq_is_refused(tmp_path: Path):
    with pytest.raises(EdgekdError, match="TensorRT cannot take 2 Q/DQ nodes") as exc:
        tb.write_bundle(qdq_conv(tmp_path / "m.onnx", zero_point=3), tmp_path / "b", DLA, "orin", (1, 3, 8, 8))
    assert "zero point must be 0" in str(exc.value) and "ActivationSymmetric=True" in exc.value.hint
    assert not (tmp_path / "b").exists()
