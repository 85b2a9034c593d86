"""edgekd/deploy/run_on_device.py's TensorRT path up to trtexec, run as a script on this host with a
stand-in trtexec (TensorRT is not here); tests/deploy/test_tensorrt_bundle.py runs it on bundles
that edgekd.deploy.tensorrt_bundle writes."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from runner_bundles import (
    LATENCY_KEYS,
    MEASURE,
    assert_one_line_error,
    run_script,
    tensorrt_bundle,
)

import edgekd


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
