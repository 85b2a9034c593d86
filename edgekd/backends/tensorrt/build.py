"""TensorRT engines through the TensorRT Python API, and their latency through trtexec.

`build_engine` and `measure_engine` RUN ONLY ON A DEVICE (a Jetson, or an NVIDIA GPU host with
TensorRT installed): engines are specific to the GPU and the TensorRT version, so edgekd never
builds one elsewhere; off the device it writes a bundle (edgekd.deploy.tensorrt_bundle) instead.
`tensorrt` is imported inside the functions only, so `import edgekd` works without it.

Build path by TensorRT major version (TensorRT developer guide and 10.x -> 11.x migration guide):
- 10.x: a weakly typed network with BuilderFlag.INT8 for the Q/DQ graph (and FP16 for layers the
  graph leaves in float), the same as `trtexec --int8 [--fp16]`. Not STRONGLY_TYPED: a strongly
  typed network keeps every unquantized layer in FP32, which DLA cannot run.
- 11.x: every network is strongly typed (the default of create_network); no precision flags exist.

Inputs: any number, any dtype (a ModelInputs). The build pins every dynamic network input to its
resolved shape in one optimization profile (min = opt = max); trtexec gets the same shapes and
feedgen's values (--loadInputs), so token ids stay inside the vocabulary.

Tested here without TensorRT: the toolchain checks and measure_engine around a stand-in trtexec
that replays real trtexec output. build_engine's TensorRT API calls (parser, profile, builder)
have run only where TensorRT and a CUDA device are present, never in our CI.
"""
from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from edgekd.backends.tensorrt import trtexec
from edgekd.common.fsutil import atomic_write_bytes
from edgekd.common.toolchain import require
from edgekd.config.tensorrt import TensorRTConfig, version_tuple
from edgekd.errors import EdgekdError, ToolchainMissing
from edgekd.graph.inputs import ModelInputs

_PURPOSE = "building a TensorRT engine (runs only on the device)"


def _cuda_device_count() -> int:
    """CUDA devices the driver reports (libcuda through ctypes), 0 where there is no driver."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def available() -> bool:
    """True when the `tensorrt` package is importable and a CUDA device is present."""
    try:
        importable = importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):  # a broken or blocked install
        importable = False
    return importable and _cuda_device_count() > 0


def _import_tensorrt(cfg: TensorRTConfig) -> Any:
    trt = require("tensorrt", _PURPOSE)
    if version_tuple(trt.__version__) < version_tuple(cfg.min_trt_version) or version_tuple(trt.__version__)[0] != cfg.trt_major:
        raise ToolchainMissing(f"the target needs TensorRT {cfg.trt_major}.x >= {cfg.min_trt_version}, "
                               f"but TensorRT {trt.__version__} is installed",
                               "build on a device with the target's JetPack/TensorRT, or fix the target's [tensorrt] table")
    return trt


def _parse(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    """The network and its parser (the parser owns weights the network uses: keep both alive)."""
    network = builder.create_network(0)  # TensorRT 11: strongly typed by default; 10: weakly typed on purpose
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EdgekdError(f"TensorRT {trt.__version__}'s ONNX parser rejected {onnx_path}: " + " | ".join(errors),
                          "see the op-support report (edgekd.analysis.rules_tensorrt) for the nodes TensorRT cannot take")
    return network, parser


def pin_dynamic_inputs(builder: Any, network: Any, config: Any, inputs: ModelInputs | None) -> list[str]:
    """One optimization profile with min = opt = max = the resolved shape for EVERY dynamic
    network input (DLA needs static shapes; one shape is also what edgekd measures). Returns the
    names pinned."""
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if not dynamic:
        return []
    shapes = inputs.shapes() if inputs is not None else {}
    missing = [t.name for t in dynamic if t.name not in shapes]
    if missing:
        raise EdgekdError(f"network inputs {', '.join(missing)} have dynamic dimensions and no resolved shape",
                          "pass inputs=edgekd.graph.resolve.load_inputs(model) (every input resolved to one shape)")
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        shape = shapes[tensor.name]
        if len(shape) != len(tuple(tensor.shape)):
            raise EdgekdError(f"input '{tensor.name}' resolved to {'x'.join(map(str, shape))}, but the network declares "
                              f"rank {len(tuple(tensor.shape))}")
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    return [t.name for t in dynamic]


def _configure(trt: Any, builder: Any, cfg: TensorRTConfig) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.builder_optimization_level = cfg.builder_optimization_level
    if cfg.trt_major == 10:
        if cfg.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        if cfg.precision == "fp16" or cfg.also_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
    if cfg.dla_core is not None:
        if builder.num_DLA_cores <= cfg.dla_core:
            raise EdgekdError(f"the target asks for DLA core {cfg.dla_core}, but this device has {builder.num_DLA_cores} DLA cores",
                              "set dla_core to an existing core, or remove it to build for the GPU")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla_core
        if cfg.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


def build_engine(onnx_path: Path, engine_path: Path, cfg: TensorRTConfig, timing_cache: Path,
                 inputs: ModelInputs | None = None) -> dict[str, Any]:
    """Parse `onnx_path`, pin its dynamic inputs to `inputs`' shapes, build with the target's
    settings, write the serialized engine and the updated timing cache (both atomically). Runs
    only on the device. Returns what was built."""
    trt = _import_tensorrt(cfg)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)
    config = _configure(trt, builder, cfg)
    pinned = pin_dynamic_inputs(builder, network, config, inputs)
    cache_blob = timing_cache.read_bytes() if timing_cache.exists() else b""
    config.set_timing_cache(config.create_timing_cache(cache_blob), ignore_mismatch=False)
    layers_on_dla = sum(bool(config.can_run_on_DLA(network.get_layer(i))) for i in range(network.num_layers)) \
        if cfg.dla_core is not None else 0
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - start
    if serialized is None:
        raise EdgekdError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path} on {cfg.device_description}",
                          "the TensorRT log above names the layer; without gpu_fallback every layer must run on DLA")
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return {"engine": str(engine_path), "size_bytes": engine_path.stat().st_size, "trt_version": trt.__version__,
            "device": cfg.device_description, "layers": network.num_layers, "layers_dla_capable": layers_on_dla,
            "timing_cache": str(timing_cache), "timing_cache_reused": bool(cache_blob), "build_s": build_s,
            "pinned_inputs": {name: list(inputs.shapes()[name]) for name in pinned} if inputs is not None else {}}


def measure_engine(engine_path: Path, cfg: TensorRTConfig, workdir: Path, inputs: ModelInputs | None = None, *,
                   trtexec_path: str = "trtexec", timeout_s: float = 600.0) -> dict[str, Any]:
    """Latency of a built engine from `trtexec --loadEngine` (runs only on the device): the parsed
    performance summary plus every per-query latency from --exportTimes. With `inputs`, trtexec
    gets --shapes for every input (with --loadEngine it uses them only for inputs the engine leaves
    dynamic) and --loadInputs with edgekd.graph.feedgen's values (workdir/inputs/*.bin), as the
    deploy bundle does (edgekd.deploy.tensorrt_bundle says why)."""
    from edgekd.deploy.tensorrt_bundle import write_input_files

    exe = shutil.which(trtexec_path)
    if exe is None:
        raise ToolchainMissing(f"measuring a TensorRT engine needs trtexec, and '{trtexec_path}' is not on PATH",
                               "JetPack installs it as /usr/src/tensorrt/bin/trtexec")
    workdir.mkdir(parents=True, exist_ok=True)
    times = workdir / "trtexec_times.json"
    files = write_input_files(inputs, workdir) if inputs else None  # relative to workdir, where trtexec runs
    try:
        cmd = trtexec.bench_command(str(engine_path.resolve()), cfg.model_dump(), input_shapes=inputs.shapes() if inputs else None,
                                    export_times=str(times.resolve()), input_files=files, trtexec=exe)
    except ValueError as exc:
        raise EdgekdError(f"cannot measure {engine_path} with trtexec: {exc}", "rename the model's inputs") from None
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=workdir)
    (workdir / "trtexec_measure.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise EdgekdError(f"trtexec exited with {proc.returncode} measuring {engine_path}: {tail}",
                          f"the full log is {workdir / 'trtexec_measure.log'}")
    summary = trtexec.parse_performance_summary(proc.stdout)
    return {"summary": summary, "samples_ms": trtexec.parse_exported_times(times.read_text()),
            "command": cmd, "how": f"trtexec (TensorRT {summary['trt_version'] or 'version not printed'}) "
                                   f"--loadEngine on {cfg.device_description}, data transfers included"
                                   + (f", inputs {inputs.describe()} (edgekd feedgen values)" if inputs else "")}
