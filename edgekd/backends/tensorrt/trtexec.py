"""trtexec command lines and trtexec output parsing. STDLIB ONLY: this file is copied as-is into
TensorRT deploy bundles, where the device-side runner imports it next to build_engine.sh.

Facts this module relies on (TensorRT `samples/common/sampleOptions.cpp`, `sampleReporting.cpp`,
`trtexec --help` of TensorRT 10.6, NVIDIA's "Migrating trtexec Usage from TensorRT 10.x to 11.x"):

- TensorRT 10.x builds Q/DQ (explicitly quantized) ONNX with `--int8` (and `--fp16` for the layers
  the Q/DQ graph leaves in float); TensorRT 11.x removed `--int8/--fp16/--best/--calib`: every network
  is strongly typed and precision comes from the ONNX tensor types, so no precision flag is passed.
- `Latency` in the performance summary is H2D + GPU compute + D2H of one query; it includes the
  data transfers unless `--noDataTransfers` is given, which this module never passes.
- `--exportTimes=FILE` writes a JSON list with one object per timed query:
  `startEnqMs, endEnqMs, startH2dMs, endH2dMs, startComputeMs, endComputeMs, startD2hMs, endD2hMs,
  h2dMs, computeMs, d2hMs, latencyMs` for the timed queries only (current sampleReporting.cpp;
  older releases also wrote `endToEndMs` and the warm-up queries, and TensorRT 7 spelled the copies
  `startInMs/inMs/outMs`: `latencyMs` is in every layout).
- `--shapes=name:1x128,name2:1x128` and `--loadInputs=name:file,name2:file2` (sampleOptions.cpp):
  the value is split on ',' first, then each item on its last ':'; a name may be single-quoted
  ('Input:0'). At build time trtexec refuses --shapes for a model without dynamic inputs ("Static
  model does not take explicit shapes", sampleEngines.cpp); with --loadEngine it uses a given shape
  only for inputs the engine leaves dynamic (sampleInference.cpp setUpInference).
- A --loadInputs file is the input's raw values; its size must equal the binding's (volume x
  element size; INT64 inputs are 8 bytes from TensorRT 10 on: sampleUtils.cpp dataTypeSize,
  loadFromFile). Inputs without a file get trtexec's random values.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Sequence

PERCENTILES = (90, 95, 99)
SUMMARY_MARKER = "=== Performance summary ==="
# summary line name -> key in parse_performance_summary's result
_SECTIONS = {
    "Latency": "latency",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
    "End-to-End Host Latency": "end_to_end",  # TensorRT <= 8.4 only
}
_PREFIX = re.compile(r"^\s*(?:\[[^\]]*\]\s*)*")  # "[07/02/2026-03:47:08] [I] " and similar
_METRIC_LINE = re.compile(r"^(?P<name>[A-Za-z0-9 \-]+?):\s+(?P<body>min = .*)$")
_STAT = re.compile(r"(?P<key>min|max|mean|median|percentile\((?P<pct>[0-9.]+)%\))\s*=\s*(?P<value>[-+0-9.eE]+|inf|nan)\s*ms")
_THROUGHPUT = re.compile(r"^Throughput:\s*(?P<value>[-+0-9.eE]+|inf|nan)\s*qps")
_SECONDS = re.compile(r"^(?P<name>Total Host Walltime|Total GPU Compute Time):\s*(?P<value>[-+0-9.eE]+)\s*s\b")
_VERSION_LINE = re.compile(r"TensorRT version:\s*(?P<version>\d+\.\d+\.\d+)")
_VERSION_TAG = re.compile(r"\[TensorRT v(?P<tag>\d+)\]")


# ---------------------------------------------------------------- command lines


def _check_cfg(cfg: Mapping[str, Any]) -> None:
    """The few rules this stdlib module must enforce itself (edgekd's TensorRTConfig checks all)."""
    if cfg.get("trt_major") not in (10, 11):
        raise ValueError(f"trt_major must be 10 or 11, got {cfg.get('trt_major')!r}")
    if cfg.get("precision") not in ("int8", "fp16"):
        raise ValueError(f"precision must be 'int8' or 'fp16', got {cfg.get('precision')!r}")
    dla = cfg.get("dla_core")
    if dla is not None and (not isinstance(dla, int) or isinstance(dla, bool) or dla < 0):
        raise ValueError(f"dla_core must be a non-negative integer or None, got {dla!r}")
    if cfg.get("gpu_fallback") and dla is None:
        raise ValueError("gpu_fallback needs dla_core: GPU fallback only applies to DLA builds")


def _spec_name(name: str, option: str) -> str:
    """An input name as trtexec's --shapes/--loadInputs take it: trtexec splits the option's value on
    ',' first, then each item on its last ':' (or after a single-quoted name), so a name with ':' is
    wrapped in single quotes ("'Input:0'", as `trtexec --help` documents); ',' and "'" cannot be
    expressed at all."""
    if "'" in name or "," in name:
        raise ValueError(f"input name {name!r} contains a single quote or a comma, which trtexec's {option} cannot express")
    return f"'{name}'" if ":" in name else name


def shapes_spec(input_shapes: Mapping[str, Sequence[int]]) -> str:
    """`name:1x3x32x32,other:1x128` as trtexec's --shapes takes it. A dim may be 0 (an empty
    tensor, e.g. a decoder's past key/values at past length 0)."""
    parts = []
    for name, shape in input_shapes.items():
        if not shape or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
            raise ValueError(f"shape of input {name!r} must be non-negative integers, got {tuple(shape)!r}")
        parts.append(_spec_name(name, "--shapes") + ":" + "x".join(str(d) for d in shape))
    return ",".join(parts)


def inputs_spec(input_files: Mapping[str, str]) -> str:
    """`name:file,other:file2` as trtexec's --loadInputs takes it: each file holds the input's raw
    values (native byte order, exactly volume x element size bytes: sampleUtils.cpp loadFromFile
    refuses any other size). File names may not hold ':', ',' or "'"."""
    parts = []
    for name, path in input_files.items():
        if not path or any(c in path for c in ":,'"):
            raise ValueError(f"input file {path!r} for {name!r} must be a non-empty path without ':', ',' or \"'\"")
        parts.append(_spec_name(name, "--loadInputs") + ":" + path)
    return ",".join(parts)


def _precision_flags(cfg: Mapping[str, Any]) -> list[str]:
    if cfg["trt_major"] >= 11:
        return []  # strongly typed: the Q/DQ graph and tensor types decide
    flags = ["--int8"] if cfg["precision"] == "int8" else []
    if cfg["precision"] == "fp16" or cfg.get("also_fp16"):
        flags.append("--fp16")
    return flags


def _device_flags(cfg: Mapping[str, Any]) -> list[str]:
    if cfg.get("dla_core") is None:
        return []
    return [f"--useDLACore={cfg['dla_core']}"] + (["--allowGPUFallback"] if cfg.get("gpu_fallback") else [])


def _inference_flags(cfg: Mapping[str, Any], export_times: str | None, export_profile: str | None,
                     input_files: Mapping[str, str] | None) -> list[str]:
    flags = ["--percentile=" + ",".join(str(p) for p in PERCENTILES)]
    if input_files:
        flags.append("--loadInputs=" + inputs_spec(input_files))
    if cfg.get("warmup_ms") is not None:
        flags.append(f"--warmUp={cfg['warmup_ms']}")
    if cfg.get("duration_s") is not None:
        flags.append(f"--duration={cfg['duration_s']}")
    if cfg.get("use_spin_wait"):
        flags.append("--useSpinWait")
    if cfg.get("use_cuda_graph"):
        flags.append("--useCudaGraph")
    if export_times:
        flags.append(f"--exportTimes={export_times}")
    if export_profile:
        flags.append(f"--exportProfile={export_profile}")
    flags.append("--separateProfileRun")  # the profiler never slows the timed run
    return flags


def shape_range_flags(ranges: Sequence[Mapping[str, Sequence[int]]]) -> list[str]:
    """`--minShapes= --optShapes= --maxShapes=` for one optimization profile from (min, opt, max)."""
    if len(ranges) != 3 or not all(set(r) == set(ranges[0]) for r in ranges):
        raise ValueError("shape ranges are (min, opt, max), each naming the same inputs")
    return [f"--{kind}Shapes=" + shapes_spec(r) for kind, r in zip(("min", "opt", "max"), ranges)]


def build_command(onnx: str, engine: str, cfg: Mapping[str, Any], *,
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  shape_ranges: Sequence[Mapping[str, Sequence[int]]] | None = None,
                  timing_cache: str | None = None, build_only: bool = True,
                  export_times: str | None = None, export_profile: str | None = None,
                  input_files: Mapping[str, str] | None = None, trtexec: str = "trtexec") -> list[str]:
    """The trtexec argument list that builds `engine` from `onnx` with the target's settings.

    `cfg` is a TensorRT target table as a dict (edgekd's `TensorRTConfig.model_dump()`).
    `input_shapes` pins dynamic inputs to one shape (min = opt = max, which DLA needs); give it
    only for inputs the ONNX leaves dynamic (trtexec rejects --shapes for static models).
    `shape_ranges` (instead): one optimization profile (min, opt, max), e.g. a KV-cache decoder's
    prefill-to-decode range tuned at the decode step. `build_only=False` also benchmarks the new engine (see `bench_command` for the flags and
    `input_files`)."""
    _check_cfg(cfg)
    cmd = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}"]
    cmd += _precision_flags(cfg) + _device_flags(cfg)
    if cfg.get("workspace_mib") is not None:
        cmd.append(f"--memPoolSize=workspace:{int(cfg['workspace_mib'])}M")
    if cfg.get("builder_optimization_level") is not None:
        cmd.append(f"--builderOptimizationLevel={int(cfg['builder_optimization_level'])}")
    if timing_cache:
        cmd.append(f"--timingCacheFile={timing_cache}")
    if input_shapes and shape_ranges:
        raise ValueError("give input_shapes (min = opt = max) or shape_ranges, not both")
    if input_shapes:
        cmd.append("--shapes=" + shapes_spec(input_shapes))
    if shape_ranges:
        cmd += shape_range_flags(shape_ranges)
    if build_only:
        cmd.append("--skipInference")
    else:
        cmd += _inference_flags(cfg, export_times, export_profile, input_files)
    return cmd


def bench_command(engine: str, cfg: Mapping[str, Any], *,
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  export_times: str | None = None, export_profile: str | None = None,
                  input_files: Mapping[str, str] | None = None, trtexec: str = "trtexec") -> list[str]:
    """The trtexec argument list that loads a built engine and measures it: percentiles 90/95/99,
    data transfers on (so Latency includes H2D and D2H), per-query times to `export_times`,
    input values from `input_files` ({name: raw file}, --loadInputs; trtexec generates random
    values for inputs not named)."""
    _check_cfg(cfg)
    cmd = [trtexec, f"--loadEngine={engine}"] + _device_flags(cfg)[:1]  # the DLA core to run on
    if input_shapes:
        cmd.append("--shapes=" + shapes_spec(input_shapes))
    return cmd + _inference_flags(cfg, export_times, export_profile, input_files)


# ---------------------------------------------------------------- output parsing


def decode_version_tag(tag: str) -> str:
    """`[TensorRT v101600]` -> '10.16.0' (major*10000 + minor*100 + patch from TensorRT 10 on);
    `[TensorRT v8601]` -> '8.6.1' (major*1000 + minor*100 + patch before)."""
    n = int(tag)
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def trt_version(text: str) -> str | None:
    """The TensorRT version a trtexec log names, or None when it names none."""
    match = _VERSION_LINE.search(text)
    if match:
        return match.group("version")
    match = _VERSION_TAG.search(text)
    return decode_version_tag(match.group("tag")) if match else None


def _stats(body: str, name: str) -> dict[str, float | None]:
    stats: dict[str, float | None] = dict.fromkeys(("min_ms", "max_ms", "mean_ms", "median_ms"))
    stats.update({f"p{p}_ms": None for p in PERCENTILES})
    for m in _STAT.finditer(body):
        value = float(m.group("value"))
        if m.group("pct") is None:
            stats[f"{m.group('key')}_ms"] = value
        else:
            pct = m.group("pct")
            stats[f"p{int(float(pct)) if float(pct).is_integer() else pct}_ms"] = value
    missing = [k for k in ("min_ms", "max_ms", "mean_ms", "median_ms") if stats[k] is None]
    if missing:
        raise ValueError(f"trtexec summary line '{name}' lacks {', '.join(missing)}: {body!r}")
    return stats


def _summary_lines(text: str) -> list[str]:
    start = text.rfind(SUMMARY_MARKER)
    if start < 0:
        failed = [line.strip() for line in text.splitlines() if line.startswith("&&&& FAILED")]
        why = f" trtexec reported: {failed[-1]}" if failed else ""
        raise ValueError(
            f"no '{SUMMARY_MARKER}' block in this text: it is not the output of a trtexec run that "
            f"measured inference (a failed run, --skipInference, or not trtexec output at all).{why}")
    lines = []
    for raw in text[start + len(SUMMARY_MARKER):].splitlines()[1:]:
        line = _PREFIX.sub("", raw).strip()
        if line.startswith(("===", "&&&&", "Explanations of the performance metrics")):
            break
        lines.append(line)
    return lines


def parse_performance_summary(text: str) -> dict[str, Any]:
    """Numbers of the last `=== Performance summary ===` block of a trtexec log.

    Returns {"throughput_qps", "latency", "gpu_compute", "h2d", "d2h", "enqueue", "end_to_end",
    "total_host_walltime_s", "total_gpu_compute_time_s", "trt_version"}; each timing section is
    {"min_ms", "max_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", ...} with None for a
    percentile the log does not print, and a section the log does not print is None. Raises
    ValueError naming what is missing when the block, its Throughput or its Latency is absent."""
    result: dict[str, Any] = {key: None for key in _SECTIONS.values()}
    result.update(throughput_qps=None, total_host_walltime_s=None, total_gpu_compute_time_s=None)
    for line in _summary_lines(text):
        if m := _THROUGHPUT.match(line):
            result["throughput_qps"] = float(m.group("value"))
        elif m := _SECONDS.match(line):
            key = "total_host_walltime_s" if m.group("name") == "Total Host Walltime" else "total_gpu_compute_time_s"
            result[key] = float(m.group("value"))
        elif (m := _METRIC_LINE.match(line)) and m.group("name") in _SECTIONS:
            result[_SECTIONS[m.group("name")]] = _stats(m.group("body"), m.group("name"))
    for key, line in (("throughput_qps", "Throughput: ... qps"), ("latency", "Latency: min = ...")):
        if result[key] is None:
            raise ValueError(f"the trtexec performance summary has no '{line}' line")
    result["trt_version"] = trt_version(text)
    return result


def parse_exported_times(json_text: str) -> list[float]:
    """Per-query latencies in ms (`latencyMs`: H2D + compute + D2H) from an --exportTimes file,
    in the order trtexec ran them. Raises ValueError when the text is not such a file."""
    try:
        records = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--exportTimes file is not JSON: {exc}") from None
    if not isinstance(records, list) or not records:
        raise ValueError("--exportTimes file must be a non-empty JSON list of per-query records")
    samples = []
    for i, record in enumerate(records):
        value = record.get("latencyMs") if isinstance(record, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"--exportTimes record {i} has no numeric 'latencyMs': {record!r}"[:300])
        samples.append(float(value))
    return samples
