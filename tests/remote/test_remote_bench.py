"""edgekd/remote/bench.py: a build's bundle measured end to end on a local:// "device" (a folder on
this host, real onnxruntime), its errors, and the checks on what comes back."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.deploy.ort_bundle import write_ort_bundle
from edgekd.errors import EdgekdError, ToolchainMissing
from edgekd.graph.resolve import load_inputs
from edgekd.remote import RESULT_FILE, DeviceError, bench_on_device
from edgekd.remote.bench import bundle_digest, validate_result


def make_build(build_dir: Path, **fields: Any) -> Path:
    """build_dir/bundle: a one-Gemm ONNX model (onnx.helper) in an ORT bundle written by
    edgekd.deploy.ort_bundle, bundle.json fields overridden by `fields`."""
    from onnx import TensorProto, helper, numpy_helper, save

    bundle = build_dir / "bundle"
    build_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 10)).astype(np.float32), "W")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "B")
    graph = helper.make_graph([helper.make_node("Gemm", ["input", "W", "B"], ["output"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(build_dir / "model.onnx"))
    write_ort_bundle(bundle, "onnxruntime-cpu", [build_dir / "model.onnx"], "x86-test", load_inputs(build_dir / "model.onnx"),
                     session={"intra_op_num_threads": 1, "graph_optimization_level": "all"})
    spec = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**spec, **fields}))
    return build_dir


def local_device(tmp_path: Path) -> Path:
    """The folder a local:// device stands in (it must exist)."""
    (tmp_path / "device").mkdir(exist_ok=True)
    return tmp_path / "device"


def test_end_to_end_on_a_local_device(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build")
    device = local_device(tmp_path)
    result = bench_on_device(build, f"local://{device}", runs=30)
    latency = result["latency"]
    assert len(latency["samples_ms"]) == latency["runs"] == 30
    assert 0 < latency["min_ms"] <= latency["p90_ms"] <= latency["max_ms"]
    assert result["runtime"] == "onnxruntime-cpu" and result["target"] == "x86-test"
    assert result["source"] == f"measured on this host ({os.uname().nodename}) in local folder {device}"
    assert result["device"]["hostname"] == os.uname().nodename
    # the work folder on the "device" is named by the bundle's content
    workdir = device / "tmp" / f"edgekd-{bundle_digest(build / 'bundle')[:12]}"
    assert (workdir / "run_on_device.py").is_file() and (workdir / "bundle" / "model.onnx").is_file()
    pulled, = workdir.glob("result-*.json")  # a fresh name per run
    assert json.loads(pulled.read_text())["latency"] == latency
    # kept beside the build, whole
    assert json.loads((build / RESULT_FILE).read_text()) == result
    assert [p.name for p in build.iterdir() if p.name.startswith(".")] == []


def test_multi_input_model_on_a_local_device(tmp_path: Path, zoo: Any) -> None:
    """`edgekd bench BUILD --device local://DIR` for a tiny BERT (three int64 inputs): the bundle the
    x86 backend writes, run by the runner in a subprocess on this host."""
    model = zoo("bert")
    build = tmp_path / "build"
    write_ort_bundle(build / "bundle", "onnxruntime-cpu", [model], "x86-test", load_inputs(model),
                     session={"intra_op_num_threads": 1})
    result = bench_on_device(build, f"local://{local_device(tmp_path)}", runs=5)
    assert [i["name"] for i in result["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert result["latency"]["runs"] == 5 and result["latency"]["p50_ms"] > 0
    assert result["source"].startswith("measured on this host")


@pytest.mark.parametrize("old", ["edgekd-ort-bundle/1", "edgekd-ort-bundle/2"])  # /2: no device_runtimes.py
def test_bundle_of_an_older_edgekd_is_refused_before_copying(tmp_path: Path, old: str) -> None:
    build = make_build(tmp_path / "build", format=old)
    with pytest.raises(EdgekdError, match=rf"bundle format '{old}' is not one this edgekd's device runner reads") as info:
        bench_on_device(build, f"local://{local_device(tmp_path)}")
    assert "rebuild it" in info.value.hint and not any((tmp_path / "device").iterdir())


def test_default_runs_is_the_runners(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build")
    assert bench_on_device(build, f"local://{local_device(tmp_path)}")["latency"]["runs"] == 300


def test_changed_bundle_gets_a_new_work_folder(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build")
    before = bundle_digest(build / "bundle")
    (build / "bundle" / "notes.txt").write_text("x")
    assert bundle_digest(build / "bundle") != before


def test_build_without_bundle(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    with pytest.raises(EdgekdError, match="has no device bundle.*run edgekd build first") as info:
        bench_on_device(tmp_path / "build", f"local://{local_device(tmp_path)}")
    assert info.value.exit_code == 2 and "\n" not in info.value.one_line()


def test_bad_device_url_before_anything_is_copied(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build")
    with pytest.raises(EdgekdError, match="unknown scheme 'scp'"):
        bench_on_device(build, "scp://host")


def test_runner_failure_names_the_device_and_keeps_the_old_result(tmp_path: Path) -> None:
    build = make_build(tmp_path / "build")
    (build / RESULT_FILE).write_text("{\"previous\": true}")
    (build / "bundle" / "model.onnx").unlink()
    with pytest.raises(DeviceError, match=r"run_on_device.py on this host .* exited 2: run_on_device: error: model 'model.onnx' not found"):
        bench_on_device(build, f"local://{local_device(tmp_path)}", runs=5)
    assert (build / RESULT_FILE).read_text() == "{\"previous\": true}"


def test_runtime_missing_on_the_device_is_toolchain_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = make_build(tmp_path / "build", runtime="tensorrt", format="edgekd-tensorrt-bundle/3")
    (build / "bundle" / "build_engine.sh").write_text("exit 0\n")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # the local "device" has no trtexec (nor has this host)
    with pytest.raises(ToolchainMissing, match="trtexec not found") as info:
        bench_on_device(build, f"local://{local_device(tmp_path)}")
    assert info.value.exit_code == 3


# ------------------------------------------------------------------ checking what comes back


def good_result(runs: int = 3) -> dict[str, Any]:
    samples = [1.0, 2.0, 3.0][:runs]
    latency = {"runs": runs, "p50_ms": 2.0, "p90_ms": 2.8, "p99_ms": 2.98, "mean_ms": 2.0, "min_ms": 1.0,
               "max_ms": 3.0, "throughput_per_s": 500.0, "samples_ms": samples}
    return {"schema": "edgekd-device-result/2", "runtime": "onnxruntime-cpu", "device": {"hostname": "orin"}, "latency": latency}


def test_validate_accepts_a_good_result() -> None:
    assert validate_result(json.dumps(good_result()), {"runtime": "onnxruntime-cpu"}, 3, "dev")["device"]["hostname"] == "orin"


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r.update(schema="edgekd-device-result/1"), "schema"),
    (lambda r: r.update(runtime="tensorrt"), "runtime 'tensorrt'"),
    (lambda r: r.pop("device"), "device"),
    (lambda r: r["latency"].pop("p90_ms"), "latency.p90_ms"),
    (lambda r: r["latency"].update(mean_ms=float("nan")), "latency.mean_ms"),
    (lambda r: r["latency"].update(samples_ms=[1.0]), "samples_ms"),
    (lambda r: r["latency"].update(runs=2, samples_ms=[1.0, 2.0]), "2 timed runs, 3 asked for"),
])
def test_validate_rejects(mutate: Any, needle: str) -> None:
    result = good_result()
    mutate(result)
    with pytest.raises(DeviceError, match="not an edgekd device result") as info:
        validate_result(json.dumps(result), {"runtime": "onnxruntime-cpu"}, 3, "adb device X")
    assert needle in str(info.value)


def test_validate_rejects_non_json() -> None:
    with pytest.raises(DeviceError, match="not JSON"):
        validate_result("{half", {"runtime": "onnxruntime-cpu"}, None, "dev")


def test_over_ssh_the_steps_and_their_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ssh path with subprocess.run recorded (no network): push bundle and runner, run, pull."""
    import shlex
    import subprocess

    from edgekd.remote import transports

    build = make_build(tmp_path / "build")
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert not kwargs.get("shell")
        calls.append(argv)
        if argv[0].endswith("scp") and argv[-2].startswith("nvidia@orin:"):  # the pull
            Path(argv[-1]).write_text(json.dumps({**good_result(), "runtime": "onnxruntime-cpu"}))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(transports.subprocess, "run", fake_run)
    monkeypatch.setattr(transports.shutil, "which", lambda name: name)
    result = bench_on_device(build, "ssh://nvidia@orin:2222", runs=3)
    assert result["source"] == "measured on ssh nvidia@orin port 2222"
    workdir = f"/tmp/edgekd-{bundle_digest(build / 'bundle')[:12]}"
    mkdir1, push_bundle, mkdir2, push_runner, run, pull = calls
    assert push_bundle[-2:] == [str(build / "bundle"), f"nvidia@orin:{workdir}/"]
    assert push_runner[-2].endswith("edgekd/deploy/run_on_device.py") and mkdir1 == mkdir2
    remote = run[run.index("nvidia@orin") + 1:]
    words = shlex.split(" ".join(remote))
    assert words[:3] == ["cd", workdir, "&&"] and words[3:7] == ["python3", "run_on_device.py", "--bundle", "bundle"]
    assert words[-2:] == ["--runs", "3"] and pull[-2] == f"nvidia@orin:{workdir}/{words[8]}"
    assert json.loads((build / RESULT_FILE).read_text())["source"] == result["source"]
