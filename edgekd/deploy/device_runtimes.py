"""edgekd device-side runtimes: how run_on_device.py measures each runtime a bundle may name.

STANDALONE like the runner: copied into every bundle beside run_on_device.py and loaded by it from
the bundle folder (bundle.json "runtimes"); the standard library, numpy and the runtime itself only
(onnxruntime, onnxruntime_qnn are imported by name when a runtime needs them; TensorRT is run as
trtexec). Python >= 3.8.

The entry point is measure(job): `job` is the runner's Job (see JobLike below: the bundle, the
timed and warm-up runs, and the runner's helpers for its errors, the bundle's files and feeds, and
the timing loop). It returns (latency, runtime_version, runtime_details) for the result file. This
module never imports the runner: a file loaded from the bundle has no package to import it from.
The Job interface is part of the bundle format: changing it means a new format in the runner's
FORMATS and in both bundle writers (edgekd/deploy/ort_bundle.py, tensorrt_bundle.py).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import numpy as np

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it; not on PATH there
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(bool)": "bool",
              "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16", "tensor(int16)": "int16",
              "tensor(uint32)": "uint32", "tensor(int32)": "int32", "tensor(uint64)": "uint64", "tensor(int64)": "int64"}

Latency = Dict[str, Any]
Measured = Tuple[Latency, str, Dict[str, Any]]  # latency, runtime_version, runtime_details


class JobLike(Protocol):
    """What run_on_device.py's Job gives this module."""

    EXIT_USER: int  # bad arguments or bundle
    EXIT_MISSING: int  # the runtime is missing on this device
    EXIT_RUNTIME: int  # the runtime failed loading or running the model
    bundle_dir: Path
    bundle: Dict[str, Any]
    runs: int
    warmup: int

    def error(self, message: str, code: int = ..., cause: Optional[BaseException] = None) -> Exception: ...
    def file(self, name: str, what: str) -> Path: ...
    def helper(self, name: str, what: str) -> Any: ...
    def feeds(self) -> Dict[str, np.ndarray]: ...
    def time_runs(self, run_once: Callable[[], object]) -> List[float]: ...
    def latency(self, samples: List[float], **fields: Any) -> Latency: ...
    def memory_mb(self, field: str) -> Optional[float]: ...
    def usable_cores(self) -> int: ...


def measure(job: JobLike) -> Measured:
    """Measure the bundle's model with its runtime (bundle.json "runtime")."""
    runtime = job.bundle["runtime"]
    if runtime not in MEASURE:
        raise job.error(f"this bundle's device_runtimes.py cannot measure runtime {runtime!r} ({', '.join(MEASURE)}); rebuild the bundle")
    return MEASURE[runtime](job)


# ------------------------------------------------------------------ ONNX Runtime (CPU and QNN)


def _import(job: JobLike, module: str, install: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise job.error(f"Python package '{module}' is not importable on this device ({exc}); {install}", job.EXIT_MISSING) from exc


def _session_options(job: JobLike, ort: Any) -> Tuple[Any, int]:
    """bundle.json "session" as onnxruntime SessionOptions, and the intra-op threads they set."""
    cfg = job.bundle.get("session", {})
    opts = ort.SessionOptions()
    level = cfg.get("graph_optimization_level", "all")
    if level not in LEVELS:
        raise job.error(f"session.graph_optimization_level is {level!r}; expected one of {', '.join(LEVELS)}")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    threads = int(cfg.get("intra_op_num_threads", 0)) or job.usable_cores()  # 0: every usable core, as edgekd does
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = int(cfg.get("inter_op_num_threads", 1))
    parallel = cfg.get("execution_mode", "sequential") == "parallel"
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in cfg.get("config_entries", {}).items():
        opts.add_session_config_entry(str(key), str(value))
    opts.log_severity_level = 3  # errors only: the last stderr line must stay the runner's message
    return opts, threads


def _check_session_inputs(job: JobLike, session: Any) -> None:
    """The model's inputs must be the ones bundle.json records, with the same element types."""
    bundle = job.bundle
    model = {i.name: i.type for i in session.get_inputs()}
    recorded = {s["name"]: s["dtype"] for s in bundle["inputs"]}
    if set(model) != set(recorded):
        raise job.error(f"bundle.json records inputs {', '.join(recorded)}, but {bundle['model']} has inputs "
                        f"{', '.join(model) or 'none'}; rebuild the bundle")
    for name, ort_type in model.items():
        if ORT_DTYPES.get(ort_type) != str(np.dtype(recorded[name])):
            raise job.error(f"input {name!r} of {bundle['model']} is {ort_type}, but bundle.json records {recorded[name]}")


def _measure_session(job: JobLike, open_session: Callable[[], Any], feeds: Dict[str, np.ndarray], threads: int) -> Latency:
    """Open the session (memory counted), feed every input its generated value, time it."""
    model = job.bundle["model"]
    before_mb = job.memory_mb("VmRSS")
    try:
        session = open_session()
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise job.error(f"onnxruntime could not load {model}", job.EXIT_RUNTIME, exc) from exc
    _check_session_inputs(job, session)
    try:
        samples = job.time_runs(lambda: session.run(None, feeds))
    except Exception as exc:
        raise job.error(f"onnxruntime failed running {model}", job.EXIT_RUNTIME, exc) from exc
    after_mb = job.memory_mb("VmRSS")
    return job.latency(samples, intra_op_threads=threads, peak_rss_mb=job.memory_mb("VmHWM"),
                       engine_rss_mb=None if after_mb is None or before_mb is None else after_mb - before_mb)


def measure_onnxruntime_cpu(job: JobLike) -> Measured:
    ort = _import(job, "onnxruntime", "install it with: pip install onnxruntime")
    model = job.file(job.bundle["model"], "model")
    feeds = job.feeds()
    opts, threads = _session_options(job, ort)
    latency = _measure_session(job, lambda: ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"]),
                               feeds, threads)
    return latency, f"onnxruntime {ort.__version__}", {"providers": ["CPUExecutionProvider"]}


def _qnn_device(job: JobLike, ort: Any, qnn: Any) -> Any:
    """The QNN EP's device (the NPU where it lists one), registering onnxruntime-qnn's EP first."""
    if not any(d.ep_name == "QNNExecutionProvider" for d in ort.get_ep_devices()):  # registering twice fails
        ort.register_execution_provider_library("QNNExecutionProvider", qnn.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider"]
    if not devices:
        raise job.error("onnxruntime lists no QNNExecutionProvider device after registering onnxruntime-qnn", job.EXIT_MISSING)
    npus = [d for d in devices if str(d.device.type).endswith("NPU")]
    return (npus or devices)[0]


def measure_qnn_htp(job: JobLike) -> Measured:
    """The QNN EP as a plugin (onnxruntime-qnn 2.x on onnxruntime >= 1.24), loading the context model."""
    ort = _import(job, "onnxruntime", "install it with: pip install onnxruntime")
    qnn = _import(job, "onnxruntime_qnn", "install it with: pip install onnxruntime-qnn")
    model = job.file(job.bundle["model"], "QNN context model")
    feeds = job.feeds()
    device = _qnn_device(job, ort, qnn)
    options = {"backend_path": qnn.get_qnn_htp_path(), **{str(k): str(v) for k, v in job.bundle.get("qnn", {}).items()}}
    opts, threads = _session_options(job, ort)
    opts.add_provider_for_devices([device], options)
    providers: List[str] = []

    def open_session() -> Any:
        session = ort.InferenceSession(str(model), opts)
        providers.extend(session.get_providers())
        if "QNNExecutionProvider" not in providers:
            raise RuntimeError("the session does not use QNNExecutionProvider")
        return session

    latency = _measure_session(job, open_session, feeds, threads)
    emulated = platform.machine().lower() in ("x86_64", "amd64")
    details = {"providers": providers, "qnn_provider_options": options,
               "qnn_device_type": str(device.device.type), "qnn_sdk": getattr(qnn.build_and_package_info, "qnn_version", "unknown"),
               "htp_emulated": emulated}
    if emulated:
        details["note"] = "libQnnHtp on x86_64 emulates the HTP: numerics are real, wall-clock time is not a phone's"
    return latency, f"onnxruntime {ort.__version__} + onnxruntime-qnn {qnn.__version__}", details


# ------------------------------------------------------------------ OpenVINO (CPU plugin)


def openvino_properties(job: JobLike) -> Dict[str, Any]:
    """bundle.json "openvino" (edgekd.backends.openvino.settings.OpenVinoSettings) as CPU plugin properties."""
    cfg = job.bundle.get("openvino", {})
    return {"PERFORMANCE_HINT": str(cfg.get("performance_hint", "LATENCY")), "NUM_STREAMS": str(cfg.get("num_streams", 1)),
            "INFERENCE_NUM_THREADS": int(cfg.get("inference_num_threads", 0)) or job.usable_cores(),  # 0: every usable core
            "INFERENCE_PRECISION_HINT": str(cfg.get("inference_precision_hint", "f32"))}


def measure_openvino(job: JobLike) -> Measured:
    """The bundle's OpenVINO IR (an engine the x86 tuner chose) on the CPU plugin, reshaped to the
    feeds' static shapes and compiled with the bundle's properties, as edgekd timed it on the host."""
    ov = _import(job, "openvino", "install it with: pip install openvino")
    model = job.file(job.bundle["model"], "OpenVINO IR")
    job.file(Path(job.bundle["model"]).with_suffix(".bin").name, "OpenVINO IR weights")
    feeds = job.feeds()
    properties = openvino_properties(job)
    before_mb = job.memory_mb("VmRSS")
    try:
        core = ov.Core()
        graph = core.read_model(str(model))
        names = {p.get_any_name() for p in graph.inputs}
        if names != set(feeds):
            raise job.error(f"bundle.json records inputs {', '.join(sorted(feeds))}, but {model.name} has inputs "
                            f"{', '.join(sorted(names)) or 'none'}; rebuild the bundle")
        graph.reshape({name: list(array.shape) for name, array in feeds.items()})
        request = core.compile_model(graph, "CPU", properties).create_infer_request()
    except RuntimeError as exc:  # OpenVINO's load and compile errors
        raise job.error(f"OpenVINO could not load {model.name}", job.EXIT_RUNTIME, exc) from exc

    def run_once() -> object:
        request.infer(feeds)
        return [request.get_output_tensor(i).data.copy() for i in range(len(request.model_outputs))]

    try:
        samples = job.time_runs(run_once)
    except RuntimeError as exc:
        raise job.error(f"OpenVINO failed running {model.name}", job.EXIT_RUNTIME, exc) from exc
    after_mb = job.memory_mb("VmRSS")
    latency = job.latency(samples, intra_op_threads=properties["INFERENCE_NUM_THREADS"], peak_rss_mb=job.memory_mb("VmHWM"),
                          engine_rss_mb=None if after_mb is None or before_mb is None else after_mb - before_mb)
    return latency, f"OpenVINO {ov.__version__}", {"device": "CPU", "properties": properties}


# ------------------------------------------------------------------ TensorRT (trtexec)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def find_trtexec(job: JobLike) -> str:
    found = shutil.which("trtexec") or (JETPACK_TRTEXEC if os.access(JETPACK_TRTEXEC, os.X_OK) else None)
    if not found:
        raise job.error(f"trtexec not found on PATH or at {JETPACK_TRTEXEC}; install TensorRT (it comes with JetPack) "
                        "or put trtexec on PATH", job.EXIT_MISSING)
    return found


def trtexec_argv(job: JobLike, trtexec: str, times: str) -> List[str]:
    """bundle.json's measure.argv (the target's settings: DLA core, warm-up, --shapes, --loadInputs,
    ...) with this device's trtexec as argv[0]; then, unless the bundle sets them: --iterations=RUNS,
    --duration=0 (so --runs means what it says), --exposeDMA (one inference at a time, as ORT's
    session.run loop: overlapped copies would add queueing to each latency). Every file of
    measure.input_files must be in the bundle."""
    measure = job.bundle.get("measure")
    measure = measure if isinstance(measure, dict) else {}
    argv = measure.get("argv")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise job.error("bundle.json: measure.argv must be a non-empty list of strings (the trtexec command); rebuild the bundle")
    files = measure.get("input_files", {})
    names = {s["name"] for s in job.bundle["inputs"]}
    if not isinstance(files, dict) or not all(isinstance(f, str) and n in names for n, f in files.items()):
        raise job.error(f"bundle.json: measure.input_files must map input names ({', '.join(sorted(names))}) to files in the bundle")
    for name, file in files.items():
        job.file(file, f"input file of '{name}'")
    given = {a.split("=", 1)[0] for a in argv[1:]}
    extra = [flag + value for flag, value in (("--iterations", f"={job.runs}"), ("--duration", "=0"), ("--exposeDMA", ""),
                                              ("--exportTimes", f"={times}")) if flag not in given]
    return [trtexec, *argv[1:], *extra]


def _build_engine(job: JobLike, trtexec: str) -> None:
    """Run the bundle's build_engine.sh with $TRTEXEC; its log goes to build_engine.log."""
    bash = shutil.which("bash")
    if not bash:
        raise job.error("bash not found on this device; build_engine.sh needs it", job.EXIT_MISSING)
    bundle_dir = job.bundle_dir
    build = subprocess.run([bash, "build_engine.sh"], cwd=str(bundle_dir), capture_output=True, text=True,
                           env={**os.environ, "TRTEXEC": trtexec}, check=False)
    (bundle_dir / "build_engine.log").write_text(build.stdout + build.stderr, encoding="utf-8")
    if build.returncode != 0:  # the script's own codes: 2 bundle altered, 3 TensorRT missing or too old
        code = build.returncode if build.returncode in (job.EXIT_USER, job.EXIT_MISSING) else job.EXIT_RUNTIME
        raise job.error(f"build_engine.sh exited {build.returncode}: {_last_line(build.stderr or build.stdout)} "
                        f"(log: {bundle_dir / 'build_engine.log'})", code)
    job.file(str(job.bundle.get("engine", "model.plan")), "TensorRT engine (made by build_engine.sh)")


def measure_tensorrt(job: JobLike) -> Measured:
    """Build the engine on this device with the bundle's build_engine.sh, then time it with trtexec;
    samples are trtexec's per-query latencies (--exportTimes). `job.warmup` is not used: trtexec
    warms up for a time (the bundle's --warmUp, else trtexec's 200 ms)."""
    trtexec = find_trtexec(job)
    measure_cfg = job.bundle.get("measure") or {}
    helper = job.helper(str(measure_cfg.get("parser") or "trtexec.py"), "trtexec helper")
    job.file("build_engine.sh", "engine build script")
    times = job.bundle_dir / Path(str(measure_cfg.get("export_times", "times.json"))).name
    argv = trtexec_argv(job, trtexec, times.name)  # checked before the (long) engine build
    _build_engine(job, trtexec)
    times.unlink(missing_ok=True)
    proc = subprocess.run(argv, cwd=str(job.bundle_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    code, output = proc.returncode, proc.stdout
    (job.bundle_dir / "trtexec.log").write_text(output, encoding="utf-8")
    if code != 0 or not times.is_file():
        raise job.error(f"trtexec exited {code}{'' if code else ' but wrote no ' + times.name}: {_last_line(output)} "
                        f"(log: {job.bundle_dir / 'trtexec.log'})", job.EXIT_RUNTIME)
    try:
        summary = helper.parse_performance_summary(output)
        samples = [float(v) for v in helper.parse_exported_times(times.read_text(encoding="utf-8"))]
    except ValueError as exc:
        raise job.error("cannot read trtexec's results", job.EXIT_RUNTIME, exc) from exc
    latency = job.latency(samples, intra_op_threads=None, peak_rss_mb=None, engine_rss_mb=None)
    details = {"argv": argv[1:], "trtexec_summary": summary,
               "note": "samples are trtexec's per-query latency (H2D + compute + D2H), one query at a time; memory "
                       "is not measured (engine memory on the GPU is not in a process's resident set)"}
    return latency, f"TensorRT {summary.get('trt_version') or 'unknown'}", details


MEASURE: Dict[str, Callable[[JobLike], Measured]] = {
    "onnxruntime-cpu": measure_onnxruntime_cpu, "qnn-htp": measure_qnn_htp, "tensorrt": measure_tensorrt, "openvino": measure_openvino}
