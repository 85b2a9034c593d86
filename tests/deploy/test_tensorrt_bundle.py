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

from edgekd.backends.tensorrt import trtexec
from edgekd.common.fsutil import sha256_file
from edgekd.config.tensorrt import TensorRTConfig
from edgekd.deploy import tensorrt_bundle as tb
from edgekd.errors import EdgekdError
from edgekd.graph import feedgen
from edgekd.graph.feeds import make_feeds
from edgekd.graph.inputs import ModelInputs, ResolvedInput
from edgekd.graph.resolve import load_inputs

DATA = Path(__file__).parents[1] / "backends" / "tensorrt" / "data"
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


def write(model: Path, out: Path, cfg: TensorRTConfig = DLA, target: str = "orin", batch: int = 1) -> list[Path]:
    """The bundle for `model` with its inputs resolved from the model itself (batch `batch`)."""
    return tb.write_bundle(model, out, cfg, target, load_inputs(model, batch=batch))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    write(qdq_conv(tmp_path / "int8.onnx"), tmp_path / "bundle", target="jetson-orin-nx")
    return tmp_path / "bundle"


def test_files_and_manifest(bundle: Path, tmp_path: Path):
    carried = [tb.MODEL, tb.SCRIPT, tb.HELPER, "feedgen.py", "run_on_device.py", "device_runtimes.py", "inputs/00_x.bin"]
    assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()) == sorted([*carried, tb.MANIFEST])
    manifest = json.loads((bundle / tb.MANIFEST).read_text())
    assert manifest["format"] == "edgekd-tensorrt-bundle/3" and manifest["runtime"] == "tensorrt"
    assert manifest["target"] == "jetson-orin-nx" and manifest["runner"] == "run_on_device.py"
    assert manifest["runtimes"] == "device_runtimes.py"
    assert manifest["model"] == tb.MODEL and manifest["engine"] == tb.ENGINE and manifest["feedgen"] == "feedgen.py"
    assert manifest["inputs"] == [i.to_json() for i in load_inputs(tmp_path / "int8.onnx").inputs]
    assert manifest["inputs"][0]["shape"] == [1, 3, 8, 8] and manifest["dynamic_inputs"] == ["x"]
    assert manifest["model_sha256"] == sha256_file(tmp_path / "int8.onnx") == sha256_file(bundle / tb.MODEL)
    assert manifest["files"] == {name: sha256_file(bundle / name) for name in carried}
    assert manifest["tensorrt"]["dla_core"] == 0 and manifest["tensorrt"]["min_trt_version"] == "10.0.0"
    assert manifest["build"]["argv"] == trtexec.build_command(tb.MODEL, tb.ENGINE, DLA.model_dump(), input_shapes={"x": (1, 3, 8, 8)},
                                                              timing_cache=tb.TIMING_CACHE)
    measure = manifest["measure"]
    assert measure["input_files"] == {"x": "inputs/00_x.bin"} and "--loadInputs=x:inputs/00_x.bin" in measure["argv"]
    assert "--exportTimes=times.json" in measure["argv"] and "--useDLACore=0" in measure["argv"]
    assert not any(a.startswith("--loadInputs") for a in manifest["build"]["argv"])  # the build runs no inference
    assert (bundle / tb.HELPER).read_text() == Path(trtexec.__file__).read_text()
    assert (bundle / "feedgen.py").read_text() == Path(feedgen.__file__).read_text()
    deploy = Path(tb.__file__).parent
    for name in ("run_on_device.py", "device_runtimes.py"):  # copies of the runner and what it measures with
        assert (bundle / name).read_bytes() == (deploy / name).read_bytes()
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
    write(model, tmp_path / "b", batch=2)
    proc = run_script(tmp_path / "b", fake_trtexec(tmp_path))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "b" / tb.MANIFEST).read_text())
    argv = manifest["build"]["argv"]
    assert (tmp_path / "b" / "argv.txt").read_text().splitlines() == argv[1:]
    assert "--shapes='in put:0':2x3x8x8" in argv
    assert "--loadInputs='in put:0':inputs/00_in_put_0.bin" in manifest["measure"]["argv"]


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_script_refuses_another_tensorrt_major(tmp_path: Path):
    cfg = TensorRTConfig(trt_major=11)
    write(qdq_conv(tmp_path / "m.onnx"), tmp_path / "b", cfg, "thor")
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
    write(qdq_conv(tmp_path / "m.onnx", batch=1), tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / tb.MANIFEST).read_text())
    assert manifest["dynamic_inputs"] == []
    assert not any(a.startswith("--shapes") for a in manifest["build"]["argv"] + manifest["measure"]["argv"])
    assert "--loadInputs=x:inputs/00_x.bin" in manifest["measure"]["argv"]  # values are fed all the same


def test_input_without_a_declared_shape_is_pinned(tmp_path: Path):
    """A graph input with no shape at all, resolved from --shape x=1x4: TensorRT sees it dynamic."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "m.onnx")
    tb.write_bundle(tmp_path / "m.onnx", tmp_path / "b", DLA, "orin", load_inputs(tmp_path / "m.onnx", {"x": (1, 4)}))
    manifest = json.loads((tmp_path / "b" / tb.MANIFEST).read_text())
    assert manifest["dynamic_inputs"] == ["x"] and "--shapes=x:1x4" in manifest["build"]["argv"]


def x_input(shape: tuple[int, ...], name: str = "x") -> ModelInputs:
    return ModelInputs((ResolvedInput(name, "float32", shape, "image", ("--shape",) * len(shape), batch_axis=0),))


@pytest.mark.parametrize("kwargs, match", [
    ({"target_name": "orin; rm -rf /"}, "not a plain name"),
    ({"inputs": x_input((1, 3, 8))}, "input 'x' is 1x3x8 \\(rank 3\\), but .* declares rank 4"),
    ({"inputs": x_input((1, 4, 8, 8))}, "input 'x' is 1x4x8x8: 4 on axis 1, but .* fixes it to 3"),
    ({"inputs": x_input((-1, 3, 8, 8))}, "dims must be non-negative integers"),
    ({"inputs": x_input((1, 3, 8, 8), name="pixel_values")}, "has inputs x, but the resolved inputs are pixel_values"),
    ({"inputs": ModelInputs(())}, "no resolved inputs"),
])
def test_bad_arguments(tmp_path: Path, kwargs, match):
    args = {"target_name": "orin", "inputs": x_input((1, 3, 8, 8)), **kwargs}
    with pytest.raises(EdgekdError, match=match):
        tb.write_bundle(qdq_conv(tmp_path / "m.onnx"), tmp_path / "b", DLA, **args)
    assert not (tmp_path / "b").exists()


def test_input_name_trtexec_cannot_express(tmp_path: Path):
    with pytest.raises(EdgekdError, match="contains a single quote or a comma") as exc:
        write(qdq_conv(tmp_path / "m.onnx", input_name="a,b"), tmp_path / "b")
    assert "rename the model's inputs" in exc.value.hint


def test_missing_model(tmp_path: Path):
    with pytest.raises(EdgekdError, match="does not exist"):
        tb.write_bundle(tmp_path / "nope.onnx", tmp_path / "b", DLA, "orin", x_input((1, 3, 8, 8)))


def test_asymmetric_qdq_is_refused(tmp_path: Path):
    with pytest.raises(EdgekdError, match="TensorRT cannot take 2 Q/DQ nodes") as exc:
        write(qdq_conv(tmp_path / "m.onnx", zero_point=3), tmp_path / "b")
    assert "zero point must be 0" in str(exc.value) and "ActivationSymmetric=True" in exc.value.hint
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- a multi-input model: tiny BERT


@pytest.fixture(scope="module")
def bert_qdq(zoo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelInputs]:
    """A tiny BERT (optimum export: input_ids, attention_mask, token_type_ids, int64, dynamic batch
    and sequence) quantized to symmetric INT8 Q/DQ with the jetson-orin-agx target's [quantize]
    recipe, calibrated on 4 generated feeds."""
    import contextlib

    from edgekd.config.loading import ConfigSearch, load_target
    from edgekd.config.models import QuantizeConfig
    from edgekd.graph.feeds import random_feedset
    from edgekd.graph.quantize import quantize_int8

    model = zoo("bert")
    inputs = load_inputs(model)
    out = tmp_path_factory.mktemp("bert-qdq")
    recipe = load_target("jetson-orin-agx", ConfigSearch()).config.quantize
    with contextlib.chdir(out):  # onnxruntime's shape inference may leave temp files in the working folder
        quantize_int8(model, out / "bert_int8.onnx", random_feedset(inputs, 4).arrays, QuantizeConfig(), recipe)
    return out / "bert_int8.onnx", inputs


def test_multi_input_bundle(bert_qdq, tmp_path: Path):
    """Every input is pinned with --shapes and fed from its file (what feedgen makes: ids inside
    the vocabulary, mask of ones, type ids of zeros), and build_engine.sh stays valid bash."""
    qdq, inputs = bert_qdq
    tb.write_bundle(qdq, tmp_path / "b", TensorRTConfig(trt_major=10), "jetson-orin-agx", inputs)
    manifest = json.loads((tmp_path / "b" / tb.MANIFEST).read_text())
    names = ["input_ids", "attention_mask", "token_type_ids"]
    assert [i["name"] for i in manifest["inputs"]] == names and manifest["dynamic_inputs"] == names
    shapes = "--shapes=input_ids:1x128,attention_mask:1x128,token_type_ids:1x128"
    assert shapes in manifest["build"]["argv"] and shapes in manifest["measure"]["argv"]
    files = {name: f"inputs/{i:02d}_{name}.bin" for i, name in enumerate(names)}
    assert manifest["measure"]["input_files"] == files
    assert "--loadInputs=" + ",".join(f"{n}:{f}" for n, f in files.items()) in manifest["measure"]["argv"]
    expected = make_feeds(inputs)
    for name, file in files.items():
        data = np.fromfile(tmp_path / "b" / file, dtype="<i8")
        assert data.size == 128 and np.array_equal(data.reshape(1, 128), expected[name])  # 1x128 int64: 1024 bytes
        assert manifest["files"][file] == sha256_file(tmp_path / "b" / file)
    ids = expected["input_ids"]
    assert 0 <= ids.min() and ids.max() < inputs.inputs[0].vocab_size and len(np.unique(ids)) > 1
    if BASH:
        assert subprocess.run([BASH, "-n", str(tmp_path / "b" / tb.SCRIPT)], capture_output=True).returncode == 0


# trtexec stand-in for the whole device path: `--help` prints real trtexec --help output (TensorRT
# 10.6); a build records its argv and writes model.plan; --loadEngine checks that every --loadInputs
# file exists, records its size, writes --exportTimes and prints a real trtexec log (TensorRT 10.16).
STAND_IN = r'''
import json, os, sys
args = [a for a in sys.argv[1:]]
if args == ["--help"]:
    sys.stdout.write(open(HELP).read()); sys.exit(0)
opts = dict(a.split("=", 1) for a in args if "=" in a)
with open("trtexec_calls.txt", "a") as fh:
    fh.write(json.dumps(args) + "\n")
if "--saveEngine" in opts:
    open(opts["--saveEngine"], "wb").write(b"plan"); sys.exit(0)
sizes = {}
for item in opts.get("--loadInputs", "").split(","):
    if item:
        name, path = item.rsplit(":", 1)
        sizes[name.strip("'")] = os.path.getsize(path)
json.dump(sizes, open("loaded_inputs.json", "w"))
n = int(opts["--iterations"])
json.dump([{"latencyMs": 0.04 + i / 1e4} for i in range(n)], open(opts["--exportTimes"], "w"))
sys.stdout.write(open(LOG).read())
'''


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_runner_measures_the_multi_input_bundle_with_a_stand_in_trtexec(bert_qdq, tmp_path: Path):
    import os
    import sys

    qdq, inputs = bert_qdq
    tb.write_bundle(qdq, tmp_path / "b", TensorRTConfig(trt_major=10), "jetson-orin-agx", inputs)
    exe = tmp_path / "bin" / "trtexec"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\nHELP = {str(HELP_TRT10_6)!r}\nLOG = {str(DATA / 'trtexec_10.16_rtx6000ada.log')!r}\n{STAND_IN}")
    exe.chmod(0o755)
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(tmp_path / "b" / "run_on_device.py"), "--bundle", str(tmp_path / "b"),
                           "--out", str(out), "--runs", "20"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["runtime"] == "tensorrt" and result["runtime_version"] == "TensorRT 10.16.0"
    assert [i["name"] for i in result["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert result["latency"]["runs"] == 20 and result["latency"]["batch"] == 1
    assert result["runtime_details"]["trtexec_summary"]["throughput_qps"] == 18392
    build, load = (json.loads(line) for line in (tmp_path / "b" / "trtexec_calls.txt").read_text().splitlines())
    assert build == json.loads((tmp_path / "b" / tb.MANIFEST).read_text())["build"]["argv"][1:]
    assert load[0] == "--loadEngine=model.plan" and "--shapes=input_ids:1x128,attention_mask:1x128,token_type_ids:1x128" in load
    assert json.loads((tmp_path / "b" / "loaded_inputs.json").read_text()) == {n: 1024 for n in inputs.names()}


def test_empty_past_inputs_get_shapes_but_no_file(zoo, tmp_path: Path):
    """GPT-2 with past key/values (optimum export, past length 0): the empty past inputs are pinned
    with a 0 dim and get no --loadInputs file (nothing to load); ids, mask and positions do."""
    model = zoo("gpt2")
    inputs = load_inputs(model)
    tb.write_bundle(model, tmp_path / "b", TensorRTConfig(trt_major=10), "jetson-orin-agx", inputs)  # float: no Q/DQ to check
    manifest = json.loads((tmp_path / "b" / tb.MANIFEST).read_text())
    spec = next(a for a in manifest["build"]["argv"] if a.startswith("--shapes=")).split("=", 1)[1].split(",")
    past = inputs.shapes()["past_key_values.0.key"]
    assert past[2] == 0 and "past_key_values.0.key:" + "x".join(map(str, past)) in spec
    assert len(spec) == len(inputs.inputs)
    assert sorted(manifest["measure"]["input_files"]) == ["attention_mask", "input_ids", "position_ids"]
    positions = np.fromfile(tmp_path / "b" / manifest["measure"]["input_files"]["position_ids"], dtype="<i8")
    assert np.array_equal(positions, np.arange(128))
