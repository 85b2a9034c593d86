"""edgekd/backends/tensorrt/build.py. TensorRT and a CUDA device are absent here: what runs is the
toolchain check, the optimization-profile logic with stand-ins for TensorRT's objects, and
measure_engine around a fake trtexec that replays a real trtexec log."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.backends.tensorrt import build as tensorrt
from edgekd.config.tensorrt import TensorRTConfig
from edgekd.errors import EdgekdError, ToolchainMissing
from edgekd.graph.feeds import make_feeds
from edgekd.graph.inputs import ModelInputs, ResolvedInput

DATA = Path(__file__).parent / "data"
CFG = TensorRTConfig(trt_major=10)


def test_not_available_without_tensorrt_or_a_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # an import of it fails, as where it is absent
    assert tensorrt.available() is False
    monkeypatch.delitem(sys.modules, "tensorrt")
    monkeypatch.setattr(tensorrt.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(tensorrt, "_cuda_device_count", lambda: 0)
    assert tensorrt.available() is False  # importable, but no CUDA device


def test_build_engine_without_tensorrt_is_a_toolchain_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ToolchainMissing, match="needs the Python package 'tensorrt'") as exc:
        tensorrt.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", CFG, tmp_path / "timing.cache")
    assert exc.value.exit_code == 3
    assert not (tmp_path / "m.plan").exists()


def test_build_engine_rejects_another_tensorrt_major(tmp_path, monkeypatch):
    class FakeTensorRT:  # only its version is read before the check fails
        __version__ = "11.4.1"

    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT)
    with pytest.raises(ToolchainMissing, match=r"needs TensorRT 10.x >= 10.0.0, but TensorRT 11.4.1 is installed"):
        tensorrt.build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", CFG, tmp_path / "timing.cache")


def fake_trtexec(tmp_path: Path, log: str, code: int = 0) -> Path:
    """An executable that prints a real trtexec log and writes an --exportTimes file."""
    exe = tmp_path / "bin" / "trtexec"
    exe.parent.mkdir()
    exe.write_text(f"""#!{sys.executable}
import sys
for arg in sys.argv[1:]:
    if arg.startswith("--exportTimes="):
        open(arg.split("=", 1)[1], "w").write('[\\n  {{ "computeMs" : 0.03, "latencyMs" : 0.04 }}\\n, {{ "computeMs" : 0.02, "latencyMs" : 0.035 }}\\n]\\n')
sys.stdout.write(open({str(DATA / log)!r}).read())
sys.exit({code})
""")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_measure_engine_parses_trtexec(tmp_path):
    exe = fake_trtexec(tmp_path, "trtexec_10.16_rtx6000ada.log")
    result = tensorrt.measure_engine(tmp_path / "m.plan", CFG, tmp_path / "work", trtexec_path=str(exe))
    assert result["summary"]["throughput_qps"] == 18392 and result["summary"]["latency"]["p90_ms"] == 0.0480957
    assert result["samples_ms"] == [0.04, 0.035]
    assert "TensorRT 10.16.0" in result["how"] and not any(a.startswith(("--shapes", "--loadInputs")) for a in result["command"])
    assert (tmp_path / "work" / "trtexec_measure.log").read_text().startswith("# source:")


def test_measure_engine_feeds_every_input(tmp_path):
    """With the model's inputs: --shapes for each and --loadInputs with feedgen's values (files in
    the work folder, where trtexec runs), as the deploy bundle does."""
    inputs = ModelInputs((ResolvedInput("input_ids", "int64", (1, 16), "token_ids", ("batch 1", "--shape"), 0, 30),
                          ResolvedInput("attention_mask", "int64", (1, 16), "attention_mask", ("batch 1", "--shape"), 0)))
    exe = fake_trtexec(tmp_path, "trtexec_10.16_rtx6000ada.log")
    result = tensorrt.measure_engine(tmp_path / "m.plan", CFG, tmp_path / "work", inputs, trtexec_path=str(exe))
    assert "--shapes=input_ids:1x16,attention_mask:1x16" in result["command"]
    assert "--loadInputs=input_ids:inputs/00_input_ids.bin,attention_mask:inputs/01_attention_mask.bin" in result["command"]
    assert result["command"][1] == f"--loadEngine={(tmp_path / 'm.plan').resolve()}"
    ids = np.fromfile(tmp_path / "work" / "inputs" / "00_input_ids.bin", dtype="<i8")
    assert np.array_equal(ids, make_feeds(inputs)["input_ids"].ravel()) and ids.max() < 30
    assert "inputs input_ids int64 1x16, attention_mask int64 1x16" in result["how"]


class FakeTensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


class FakeNetwork:
    def __init__(self, *tensors: FakeTensor) -> None:
        self.tensors = tensors
        self.num_inputs = len(tensors)

    def get_input(self, i: int) -> FakeTensor:
        return self.tensors[i]


class FakeProfileBuilder:
    """Records what pin_dynamic_inputs asks of TensorRT's builder, profile and config."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}
        self.profiles: list[dict[str, tuple]] = []

    def create_optimization_profile(self) -> "FakeProfileBuilder":
        return self

    def set_shape(self, name: str, low, opt, high) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    def add_optimization_profile(self, profile: "FakeProfileBuilder") -> None:
        self.profiles.append(dict(profile.shapes))


def test_pin_dynamic_inputs_one_profile_for_every_dynamic_input():
    """The profile logic with stand-ins for TensorRT's objects (TensorRT itself is not here)."""
    network = FakeNetwork(FakeTensor("input_ids", (-1, -1)), FakeTensor("mask", (-1, -1)), FakeTensor("scale", (1,)))
    inputs = ModelInputs(tuple(ResolvedInput(n, "int64", s, "int", ("batch 1",) * len(s), 0)
                               for n, s in (("input_ids", (1, 64)), ("mask", (1, 64)), ("scale", (1,)))))
    fake = FakeProfileBuilder()
    assert tensorrt.pin_dynamic_inputs(fake, network, fake, inputs) == ["input_ids", "mask"]
    assert fake.profiles == [{"input_ids": ((1, 64),) * 3, "mask": ((1, 64),) * 3}]  # min = opt = max, one profile
    static = FakeProfileBuilder()
    assert tensorrt.pin_dynamic_inputs(static, FakeNetwork(FakeTensor("x", (1, 3))), static, None) == []
    assert static.profiles == []
    with pytest.raises(EdgekdError, match="network inputs mask have dynamic dimensions and no resolved shape"):
        tensorrt.pin_dynamic_inputs(fake, network, fake, ModelInputs(inputs.inputs[:1]))


def test_measure_engine_reports_a_failed_run(tmp_path):
    exe = fake_trtexec(tmp_path, "trtexec_10.6_help_head.txt", code=1)
    with pytest.raises(EdgekdError, match="trtexec exited with 1"):
        tensorrt.measure_engine(tmp_path / "m.plan", CFG, tmp_path / "work", trtexec_path=str(exe))


def test_measure_engine_without_trtexec(tmp_path):
    with pytest.raises(ToolchainMissing, match="'/nonexistent/trtexec' is not on PATH"):
        tensorrt.measure_engine(tmp_path / "m.plan", CFG, tmp_path, trtexec_path="/nonexistent/trtexec")


def test_import_edgekd_does_not_import_tensorrt():
    import subprocess

    code = "import sys, edgekd.backends.tensorrt.build, edgekd.deploy.tensorrt_bundle; print(json.dumps('tensorrt' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) is False
