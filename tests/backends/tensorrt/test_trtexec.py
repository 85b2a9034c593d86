"""edgekd/backends/tensorrt/trtexec.py: command lines per TensorRT major version, and the parsers run on real
trtexec output (tests/backends/tensorrt/data/, each file names where it came from on its first line)."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from edgekd.backends.tensorrt import trtexec
from edgekd.config.tensorrt import TensorRTConfig

DATA = Path(__file__).parent / "data"


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def cfg(**kw) -> dict:
    return TensorRTConfig(**{"trt_major": 10, **kw}).model_dump()


# ---------------------------------------------------------------- parse_performance_summary


def test_parse_trt10_16_summary_equals_the_log():
    r = trtexec.parse_performance_summary(fixture("trtexec_10.16_rtx6000ada.log"))
    assert r["throughput_qps"] == 18392
    assert r["latency"] == {"min_ms": 0.0334473, "max_ms": 0.882324, "mean_ms": 0.0431899, "median_ms": 0.0386963,
                            "p90_ms": 0.0480957, "p95_ms": 0.0548096, "p99_ms": 0.144043}
    assert r["enqueue"]["median_ms"] == 0.0253906 and r["enqueue"]["p99_ms"] == 0.0578613
    assert r["h2d"] == {"min_ms": 0.00268555, "max_ms": 0.265503, "mean_ms": 0.00441713, "median_ms": 0.00390625,
                        "p90_ms": 0.00524902, "p95_ms": 0.00610352, "p99_ms": 0.00952148}
    assert r["gpu_compute"]["mean_ms"] == 0.0334352 and r["gpu_compute"]["p90_ms"] == 0.0378418
    assert r["d2h"]["max_ms"] == 0.476074 and r["d2h"]["p95_ms"] == 0.00720215
    assert r["end_to_end"] is None  # TensorRT 10 no longer prints it
    assert (r["total_host_walltime_s"], r["total_gpu_compute_time_s"]) == (3.00005, 1.84486)
    assert r["trt_version"] == "10.16.0"  # from "&&&& PASSED TensorRT.trtexec [TensorRT v101600]"


def test_parse_trt8_4_single_percentile():
    r = trtexec.parse_performance_summary(fixture("trtexec_8.4.1_issue2158.log"))
    assert r["throughput_qps"] == 827.176
    assert r["latency"] == {"min_ms": 2.11108, "max_ms": 2.95532, "mean_ms": 2.21508, "median_ms": 2.20471,
                            "p90_ms": None, "p95_ms": None, "p99_ms": 2.47363}
    assert r["gpu_compute"]["p99_ms"] == 1.2522 and r["d2h"]["mean_ms"] == 0.711038
    assert r["total_gpu_compute_time_s"] == 2.65614
    assert r["trt_version"] is None  # the pasted block names no version


def test_parse_orin_summary():
    r = trtexec.parse_performance_summary(fixture("trtexec_orin_issue2426.log"))
    assert r["throughput_qps"] == 0.406047
    assert r["latency"]["p90_ms"] == 2241.2 and r["latency"]["p99_ms"] == 2241.41
    assert r["h2d"]["median_ms"] == 1.80225 and r["gpu_compute"]["min_ms"] == 2239.08
    assert r["total_host_walltime_s"] == 24.6277


def test_parse_takes_the_last_summary_block():
    text = fixture("trtexec_8.4.1_issue2158.log") + fixture("trtexec_10.16_rtx6000ada.log")
    assert trtexec.parse_performance_summary(text)["throughput_qps"] == 18392


def test_parse_rejects_text_without_a_summary():
    with pytest.raises(ValueError, match="no '=== Performance summary ===' block"):
        trtexec.parse_performance_summary("hello world\n")
    # real trtexec output that measured nothing (`trtexec --help`)
    with pytest.raises(ValueError, match="not the output of a trtexec run that measured inference"):
        trtexec.parse_performance_summary(fixture("trtexec_10.6_help_head.txt"))


def test_parse_names_a_missing_latency_line():
    text = "\n".join(line for line in fixture("trtexec_orin_issue2426.log").splitlines() if "] Latency:" not in line)
    with pytest.raises(ValueError, match="no 'Latency: min = ...' line"):
        trtexec.parse_performance_summary(text)


@pytest.mark.parametrize("tag, version", [("101600", "10.16.0"), ("100600", "10.6.0"), ("100300", "10.3.0"),
                                          ("110401", "11.4.1"), ("8601", "8.6.1"), ("8401", "8.4.1")])
def test_decode_version_tag(tag, version):
    assert trtexec.decode_version_tag(tag) == version


# ---------------------------------------------------------------- parse_exported_times


def export_times_text(records: list[dict]) -> str:
    """JSON laid out the way sampleReporting.cpp's exportJSONTrace writes it (NVIDIA/TensorRT
    @768d994b): `[`, then `  { "key" : value, ... }` / `, { ... }` lines, then `]`. The records
    are made up here: no real --exportTimes file was found to replay."""
    lines = ["["]
    for i, rec in enumerate(records):
        body = ", ".join(f'"{k}" : {v}' for k, v in rec.items())
        lines.append(("  " if i == 0 else ", ") + "{ " + body + " }")
    return "\n".join(lines + ["]", ""])


TRT10_KEYS = ("startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
              "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs")


def test_parse_exported_times_trt10_layout():
    records = [dict(zip(TRT10_KEYS, (200.1, 200.2, 200.2, 200.21, 200.21, 200.25, 200.25, 200.26, 0.01, 0.04, 0.01, 0.06))),
               dict(zip(TRT10_KEYS, (200.3, 200.4, 200.4, 200.41, 200.41, 200.46, 200.46, 200.47, 0.01, 0.05, 0.01, 0.07)))]
    assert trtexec.parse_exported_times(export_times_text(records)) == [0.06, 0.07]


def test_parse_exported_times_legacy_layout():
    # older trtexec wrote endToEndMs too, and TensorRT 7 spelled the copies startInMs/inMs/outMs
    records = [{"startInMs": 1.0, "endInMs": 1.1, "startComputeMs": 1.1, "endComputeMs": 2.0, "startOutMs": 2.0,
                "endOutMs": 2.1, "inMs": 0.1, "computeMs": 0.9, "outMs": 0.1, "latencyMs": 1.1, "endToEndMs": 1.1}]
    assert trtexec.parse_exported_times(export_times_text(records)) == [1.1]


@pytest.mark.parametrize("text, match", [("not json", "not JSON"), ("[]", "non-empty JSON list"),
                                         ('{"latencyMs": 1}', "non-empty JSON list"),
                                         ('[{"computeMs": 1.0}]', "record 0 has no numeric 'latencyMs'"),
                                         ('[{"latencyMs": "1.0"}]', "record 0")])
def test_parse_exported_times_errors(text, match):
    with pytest.raises(ValueError, match=match):
        trtexec.parse_exported_times(text)


# ---------------------------------------------------------------- command lines


def test_build_command_trt10_int8_gpu():
    argv = trtexec.build_command("model.onnx", "model.plan", cfg(), timing_cache="timing.cache")
    assert argv == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.plan", "--int8", "--memPoolSize=workspace:1024M",
                    "--builderOptimizationLevel=3", "--timingCacheFile=timing.cache", "--skipInference"]


def test_build_command_trt10_dla_with_fallback_and_fp16():
    argv = trtexec.build_command("m.onnx", "m.plan", cfg(jetpack="6.2", dla_core=1, gpu_fallback=True, also_fp16=True),
                                 input_shapes={"x": (1, 3, 32, 32)})
    assert argv[3:7] == ["--int8", "--fp16", "--useDLACore=1", "--allowGPUFallback"]
    assert "--shapes=x:1x3x32x32" in argv


def test_build_command_trt10_fp16():
    argv = trtexec.build_command("m.onnx", "m.plan", cfg(precision="fp16"))
    assert "--fp16" in argv and "--int8" not in argv


def test_build_command_trt11_has_no_precision_flags():
    argv = trtexec.build_command("m.onnx", "m.plan", cfg(trt_major=11, jetpack="7.2.2", dla_core=0))
    assert not {"--int8", "--fp16", "--best", "--stronglyTyped"} & set(argv)
    assert "--useDLACore=0" in argv and "--allowGPUFallback" not in argv


def test_build_and_benchmark_flags():
    argv = trtexec.build_command("m.onnx", "m.plan", cfg(use_cuda_graph=True, use_spin_wait=True), build_only=False,
                                 export_times="times.json", export_profile="profile.json")
    for flag in ("--percentile=90,95,99", "--warmUp=500", "--duration=10", "--useCudaGraph", "--useSpinWait",
                 "--exportTimes=times.json", "--exportProfile=profile.json", "--separateProfileRun"):
        assert flag in argv
    assert "--skipInference" not in argv and "--noDataTransfers" not in argv  # Latency keeps H2D and D2H


def test_bench_command_loads_the_engine_on_its_dla_core():
    argv = trtexec.bench_command("m.plan", cfg(jetpack="6.2", dla_core=1, gpu_fallback=True), export_times="t.json",
                                 trtexec="/usr/src/tensorrt/bin/trtexec")
    assert argv[:3] == ["/usr/src/tensorrt/bin/trtexec", "--loadEngine=m.plan", "--useDLACore=1"]
    assert "--allowGPUFallback" not in argv and "--exportTimes=t.json" in argv and "--noDataTransfers" not in argv


def test_shapes_spec_quotes_names_trtexec_would_split():
    assert trtexec.shapes_spec({"input:0": (1, 3), "b": (2,)}) == "'input:0':1x3,b:2"
    # a decoder's past key/values at past length 0 are empty tensors
    assert trtexec.shapes_spec({"past_key_values.0.key": (1, 4, 0, 8)}) == "past_key_values.0.key:1x4x0x8"
    for name in ("it's", "a,b"):  # trtexec splits the spec on ',' before anything else
        with pytest.raises(ValueError, match="single quote or a comma"):
            trtexec.shapes_spec({name: (1,)})
    with pytest.raises(ValueError, match="non-negative integers"):
        trtexec.shapes_spec({"x": (1, -1)})


def test_inputs_spec_for_load_inputs():
    assert trtexec.inputs_spec({"input_ids": "inputs/00_input_ids.bin", "in:0": "inputs/01_in_0.bin"}) == \
        "input_ids:inputs/00_input_ids.bin,'in:0':inputs/01_in_0.bin"
    for path in ("c:/x.bin", "a,b.bin", ""):
        with pytest.raises(ValueError, match="must be a non-empty path without"):
            trtexec.inputs_spec({"x": path})


def test_bench_command_loads_input_values():
    argv = trtexec.bench_command("m.plan", cfg(), input_shapes={"input_ids": (1, 128), "attention_mask": (1, 128)},
                                 input_files={"input_ids": "inputs/00_input_ids.bin", "attention_mask": "inputs/01_attention_mask.bin"})
    assert "--shapes=input_ids:1x128,attention_mask:1x128" in argv
    assert "--loadInputs=input_ids:inputs/00_input_ids.bin,attention_mask:inputs/01_attention_mask.bin" in argv
    built = trtexec.build_command("m.onnx", "m.plan", cfg(), build_only=False, input_files={"x": "x.bin"})
    assert "--loadInputs=x:x.bin" in built
    assert not any(a.startswith("--loadInputs") for a in trtexec.build_command("m.onnx", "m.plan", cfg(), input_files={"x": "x.bin"}))


@pytest.mark.parametrize("bad, match", [({"trt_major": 12, "precision": "int8"}, "trt_major"),
                                        ({"trt_major": 10, "precision": "int4"}, "precision"),
                                        ({"trt_major": 10, "precision": "int8", "gpu_fallback": True}, "gpu_fallback needs dla_core"),
                                        ({"trt_major": 10, "precision": "int8", "dla_core": True}, "dla_core")])
def test_build_command_rejects_bad_tables(bad, match):
    with pytest.raises(ValueError, match=match):
        trtexec.build_command("m.onnx", "m.plan", bad)


def test_trtexec_module_imports_only_the_standard_library():
    tree = ast.parse(Path(trtexec.__file__).read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules
    ast.parse(Path(trtexec.__file__).read_text(), feature_version=(3, 8))  # the runner supports Python 3.8


def test_exported_times_text_is_json():
    assert json.loads(export_times_text([{"latencyMs": 1.5}])) == [{"latencyMs": 1.5}]
