#!/usr/bin/env python3
"""edgekd device-side runner: measures a bundle's batch latency on the machine it runs on.

    python3 run_on_device.py --bundle DIR --out result.json [--runs N] [--warmup N]

STANDALONE on purpose: it is copied into every bundle and run on the device, where edgekd is not
installed; it needs only the standard library, numpy and the bundle's runtime. Python >= 3.8.
DIR/bundle.json (format "edgekd-ort-bundle/2" or "edgekd-tensorrt-bundle/2"; older or unknown
formats are refused): {"runtime": "onnxruntime-cpu" | "qnn-htp" | "tensorrt", "model": FILE,
"inputs": [{"name", "dtype", "shape", "role", "batch_axis", "vocab_size", ...}, ...] (every model
input), "feedgen": "feedgen.py", "session": {...}, "qnn": {...}, "target": NAME; tensorrt:
"engine" (what build_engine.sh writes), "measure": {"argv", "export_times", "input_files"}}. Other
keys are ignored. ONNX Runtime gets a value for every input from the bundle's feedgen.py (token ids
inside the vocabulary, masks of ones, empty past, ...); trtexec gets the same values from the
bundle's input files (--loadInputs). Exit codes: 0 ok; 2 bad arguments or bundle; 3 the runtime is
missing on this device; 4 the runtime failed loading or running the model. Errors are one line.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

SCHEMA = "edgekd-device-result/2"
FORMATS = {"edgekd-ort-bundle/2": ("onnxruntime-cpu", "qnn-htp"), "edgekd-tensorrt-bundle/2": ("tensorrt",)}  # format -> runtimes
SESSION_KEYS = ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads", "execution_mode", "config_entries")
LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it; not on PATH there
EXIT_USER, EXIT_MISSING, EXIT_RUNTIME = 2, 3, 4

Latency = Dict[str, Any]
Measured = Tuple[Latency, str, Dict[str, Any]]  # latency, runtime_version, runtime_details


class RunnerError(Exception):
    """A failure the runner reports as one line on stderr and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------ measuring (host-side twins)
# summarize() is also edgekd.perf.measure's (it imports it from here); memory_mb() twins edgekd.perf.measure._memory_mb:
# this script cannot import edgekd on the device. tests/remote/test_run_on_device.py checks they agree.


def summarize(samples_ms: List[float]) -> Dict[str, Any]:
    arr = np.asarray(samples_ms)
    mean = float(arr.mean())
    return {
        "runs": int(arr.size),
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": mean,
        "min_ms": float(arr.min()),
        "max_ms": float(arr.max()),
        "throughput_per_s": 1000.0 / mean,
    }


def memory_mb(field: str) -> Optional[float]:
    """VmRSS or VmHWM (peak resident) of this process from /proc/self/status, in MiB; None where absent."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError):
        pass
    return None


def time_runs(run_once: Callable[[], object], runs: int, warmup: int) -> List[float]:
    """`warmup` untimed calls, then `runs` calls timed with perf_counter_ns; milliseconds."""
    for _ in range(warmup):
        run_once()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run_once()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


# ------------------------------------------------------------------ the device


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return None


def _cpu_model() -> str:
    fields: Dict[str, str] = {}
    for line in (_read_text("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    for key in ("model name", "Hardware"):  # x86 and others; older ARM kernels and Android
        if fields.get(key):
            return fields[key]
    if fields.get("CPU part"):  # ARM64 Linux names no model
        return f"{platform.machine()} (CPU implementer {fields.get('CPU implementer', '?')}, part {fields['CPU part']})"
    return platform.processor() or platform.machine()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_info() -> Dict[str, Any]:
    """What this machine is: enough to tell one device from another in a report."""
    info: Dict[str, Any] = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": _cpu_model(),
        "cores": _usable_cores(),
        "python": platform.python_version(),
    }
    model = _read_text("/proc/device-tree/model")  # Jetson, Qualcomm and other dev boards
    if model:
        info["model"] = model
    tegra = _read_text("/etc/nv_tegra_release")  # Jetson: the L4T release
    if tegra:
        info["nv_tegra_release"] = tegra.splitlines()[0].strip()
    nvpmodel = shutil.which("nvpmodel")  # Jetson: the power mode changes latency several-fold
    if nvpmodel:
        query = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True, check=False).stdout
        info["power_mode"] = next((ln.split(":", 1)[1].strip() for ln in query.splitlines() if ln.startswith("NV Power Mode")), None)
    getprop = shutil.which("getprop")  # Android
    if getprop:
        for prop in ("ro.product.model", "ro.soc.model", "ro.build.version.release"):
            proc = subprocess.run([getprop, prop], capture_output=True, text=True, check=False)
            if proc.returncode == 0 and proc.stdout.strip():
                info[prop] = proc.stdout.strip()
    return info


# ------------------------------------------------------------------ the bundle


def load_bundle(bundle_dir: Path) -> Dict[str, Any]:
    path = bundle_dir / "bundle.json"
    if not path.is_file():
        raise RunnerError(f"{path} not found: --bundle must be a folder made by edgekd build")
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunnerError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(bundle, dict):
        raise RunnerError(f"{path} must hold a JSON object")
    if bundle.get("format") not in FORMATS:
        raise RunnerError(f"{path}: bundle format {bundle.get('format')!r} is not one this runner reads ({', '.join(FORMATS)}); "
                          "rebuild the bundle with this edgekd (edgekd build or edgekd compile)")
    if bundle.get("runtime") not in FORMATS[bundle["format"]]:
        raise RunnerError(f"{path}: 'runtime' is {bundle.get('runtime')!r}; a {bundle['format']} bundle runs "
                          f"{' or '.join(FORMATS[bundle['format']])}")
    if not isinstance(bundle.get("model"), str) or not bundle["model"]:
        raise RunnerError(f"{path}: 'model' must name a file in the bundle")
    check_inputs(path, bundle.get("inputs"))
    for key in ("session", "qnn"):
        if not isinstance(bundle.get(key, {}), dict):
            raise RunnerError(f"{path}: '{key}' must be a JSON object")
    unknown = sorted(set(bundle.get("session", {})) - set(SESSION_KEYS))
    if unknown:
        raise RunnerError(f"{path}: unknown key(s) in 'session': {', '.join(unknown)}; known: {', '.join(SESSION_KEYS)}")
    return bundle


def _count(value: Any, positive: bool = False) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= (1 if positive else 0)


def check_inputs(path: Path, inputs: Any) -> None:
    """bundle.json's 'inputs': a non-empty list of {"name", "dtype", "shape", "role", "batch_axis",
    "vocab_size"} with numpy dtypes and non-negative dims (0: an empty past)."""
    if not isinstance(inputs, list) or not inputs:
        raise RunnerError(f"{path}: 'inputs' must be a non-empty list of the model's inputs; got {inputs!r}"[:300])
    for i, spec in enumerate(inputs):
        where = f"{path}: inputs[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("role"), str):
            raise RunnerError(f"{where} must be an object with a 'name' and a 'role'")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise RunnerError(f"{where} ('{spec['name']}'): 'shape' must be a list of non-negative integers, e.g. [1, 128]; got {shape!r}")
        try:
            np.dtype(spec["dtype"] if isinstance(spec.get("dtype"), str) else "?unset")
        except TypeError:
            raise RunnerError(f"{where} ('{spec['name']}'): 'dtype' {spec.get('dtype')!r} is not a numpy dtype") from None
        axis, vocab = spec.get("batch_axis"), spec.get("vocab_size")
        if axis is not None and not (_count(axis) and axis < len(shape)) or vocab is not None and not _count(vocab, positive=True):
            raise RunnerError(f"{where} ('{spec['name']}'): 'batch_axis' must be an axis of its shape and 'vocab_size' positive, or null")


def bundle_batch(bundle: Dict[str, Any]) -> int:
    """The batch the bundle measures: the batch axis of the first input that has one, else axis 0."""
    inputs = bundle["inputs"]
    batched = [s["shape"][s["batch_axis"]] for s in inputs if s.get("batch_axis") is not None]
    return int(batched[0] if batched else next((s["shape"][0] for s in inputs if s["shape"]), 1))


def bundle_file(bundle_dir: Path, name: str, what: str) -> Path:
    """A file named by bundle.json; it must exist and stay inside the bundle."""
    path = (bundle_dir / name).resolve()
    if bundle_dir.resolve() not in path.parents:
        raise RunnerError(f"{what} '{name}' is outside the bundle {bundle_dir}")
    if not path.is_file():
        raise RunnerError(f"{what} '{name}' not found in bundle {bundle_dir}")
    return path


def load_helper(bundle_dir: Path, name: str, what: str) -> Any:
    """A Python module the bundle carries (edgekd's feedgen.py or trtexec.py), loaded from its file."""
    path = bundle_file(bundle_dir, name, what)
    spec = importlib.util.spec_from_file_location("edgekd_bundle_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # a broken copy: say which file
        raise RunnerError(f"{what} '{name}' in bundle {bundle_dir} does not load ({_first_line(exc)}); rebuild the bundle") from exc
    return module


def make_feeds(bundle_dir: Path, bundle: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """A value for every input from the bundle's feedgen.py (edgekd.graph.feedgen)."""
    feedgen = load_helper(bundle_dir, str(bundle.get("feedgen") or "feedgen.py"), "feed generator")
    return feedgen.make_feeds(bundle["inputs"])


# ------------------------------------------------------------------ ONNX Runtime (CPU and QNN)

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64", "tensor(bool)": "bool",
               "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(uint16)": "uint16", "tensor(int16)": "int16",
               "tensor(uint32)": "uint32", "tensor(int32)": "int32", "tensor(uint64)": "uint64", "tensor(int64)": "int64"}


def _import(module: str, install: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise RunnerError(f"Python package '{module}' is not importable on this device ({exc}); {install}", EXIT_MISSING) from exc


def _session_options(ort: Any, cfg: Dict[str, Any]) -> Tuple[Any, int]:
    opts = ort.SessionOptions()
    level = cfg.get("graph_optimization_level", "all")
    if level not in LEVELS:
        raise RunnerError(f"session.graph_optimization_level is {level!r}; expected one of {', '.join(LEVELS)}")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    threads = int(cfg.get("intra_op_num_threads", 0)) or _usable_cores()  # 0: every usable core, as edgekd does
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = int(cfg.get("inter_op_num_threads", 1))
    parallel = cfg.get("execution_mode", "sequential") == "parallel"
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    for key, value in cfg.get("config_entries", {}).items():
        opts.add_session_config_entry(str(key), str(value))
    opts.log_severity_level = 3  # errors only: the last stderr line must stay the runner's message
    return opts, threads


def _check_session_inputs(session: Any, bundle: Dict[str, Any]) -> None:
    """The model's inputs must be the ones bundle.json records, with the same element types."""
    model = {i.name: i.type for i in session.get_inputs()}
    recorded = {s["name"]: s["dtype"] for s in bundle["inputs"]}
    if set(model) != set(recorded):
        raise RunnerError(f"bundle.json records inputs {', '.join(recorded)}, but {bundle['model']} has inputs "
                          f"{', '.join(model) or 'none'}; rebuild the bundle")
    for name, ort_type in model.items():
        if _ORT_DTYPES.get(ort_type) != str(np.dtype(recorded[name])):
            raise RunnerError(f"input {name!r} of {bundle['model']} is {ort_type}, but bundle.json records {recorded[name]}")


def _measure_session(open_session: Callable[[], Any], bundle: Dict[str, Any], feeds: Dict[str, np.ndarray],
                     settings: Tuple[int, int, Optional[int]]) -> Latency:
    """Open the session (memory counted), feed every input its generated value, time it.
    `settings`: runs, warmup, intra-op threads."""
    runs, warmup, threads = settings
    before_mb = memory_mb("VmRSS")
    try:
        session = open_session()
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise RunnerError(f"onnxruntime could not load {bundle['model']}: {_first_line(exc)}", EXIT_RUNTIME) from exc
    _check_session_inputs(session, bundle)
    try:
        samples = time_runs(lambda: session.run(None, feeds), runs, warmup)
    except Exception as exc:
        raise RunnerError(f"onnxruntime failed running {bundle['model']}: {_first_line(exc)}", EXIT_RUNTIME) from exc
    after_mb = memory_mb("VmRSS")
    return {**summarize(samples), "samples_ms": samples, "batch": bundle_batch(bundle), "intra_op_threads": threads,
            "peak_rss_mb": memory_mb("VmHWM"),
            "engine_rss_mb": None if after_mb is None or before_mb is None else after_mb - before_mb}


def measure_onnxruntime_cpu(bundle_dir: Path, bundle: Dict[str, Any], runs: int, warmup: int) -> Measured:
    ort = _import("onnxruntime", "install it with: pip install onnxruntime")
    model = bundle_file(bundle_dir, bundle["model"], "model")
    feeds = make_feeds(bundle_dir, bundle)
    opts, threads = _session_options(ort, bundle.get("session", {}))
    latency = _measure_session(lambda: ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"]),
                               bundle, feeds, (runs, warmup, threads))
    return latency, f"onnxruntime {ort.__version__}", {"providers": ["CPUExecutionProvider"]}


def measure_qnn_htp(bundle_dir: Path, bundle: Dict[str, Any], runs: int, warmup: int) -> Measured:
    """The QNN EP as a plugin (onnxruntime-qnn 2.x on onnxruntime >= 1.24), loading the context model."""
    ort = _import("onnxruntime", "install it with: pip install onnxruntime")
    qnn = _import("onnxruntime_qnn", "install it with: pip install onnxruntime-qnn")
    model = bundle_file(bundle_dir, bundle["model"], "QNN context model")
    feeds = make_feeds(bundle_dir, bundle)
    if not any(d.ep_name == "QNNExecutionProvider" for d in ort.get_ep_devices()):  # registering twice fails
        ort.register_execution_provider_library("QNNExecutionProvider", qnn.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider"]
    if not devices:
        raise RunnerError("onnxruntime lists no QNNExecutionProvider device after registering onnxruntime-qnn", EXIT_MISSING)
    npus = [d for d in devices if str(d.device.type).endswith("NPU")]
    device = (npus or devices)[0]
    options = {"backend_path": qnn.get_qnn_htp_path(), **{str(k): str(v) for k, v in bundle.get("qnn", {}).items()}}
    opts, threads = _session_options(ort, bundle.get("session", {}))
    opts.add_provider_for_devices([device], options)
    providers: List[str] = []

    def open_session() -> Any:
        session = ort.InferenceSession(str(model), opts)
        providers.extend(session.get_providers())
        if "QNNExecutionProvider" not in providers:
            raise RuntimeError("the session does not use QNNExecutionProvider")
        return session

    latency = _measure_session(open_session, bundle, feeds, (runs, warmup, threads))
    emulated = platform.machine().lower() in ("x86_64", "amd64")
    details = {"providers": providers, "qnn_provider_options": options,
               "qnn_device_type": str(device.device.type), "qnn_sdk": getattr(qnn.build_and_package_info, "qnn_version", "unknown"),
               "htp_emulated": emulated}
    if emulated:
        details["note"] = "libQnnHtp on x86_64 emulates the HTP: numerics are real, wall-clock time is not a phone's"
    return latency, f"onnxruntime {ort.__version__} + onnxruntime-qnn {qnn.__version__}", details


# ------------------------------------------------------------------ TensorRT (trtexec)


def find_trtexec() -> str:
    found = shutil.which("trtexec") or (JETPACK_TRTEXEC if os.access(JETPACK_TRTEXEC, os.X_OK) else None)
    if not found:
        raise RunnerError(f"trtexec not found on PATH or at {JETPACK_TRTEXEC}; install TensorRT (it comes with JetPack) "
                          "or put trtexec on PATH", EXIT_MISSING)
    return found


def trtexec_argv(bundle_dir: Path, bundle: Dict[str, Any], trtexec: str, times: str, runs: int) -> List[str]:
    """bundle.json's measure.argv (the target's settings: DLA core, warm-up, --shapes, --loadInputs,
    ...) with this device's trtexec as argv[0]; then, unless the bundle sets them: --iterations=RUNS,
    --duration=0 (so --runs means what it says), --exposeDMA (one inference at a time, as ORT's
    session.run loop: overlapped copies would add queueing to each latency). Every file of
    measure.input_files must be in the bundle."""
    measure = bundle.get("measure")
    argv = measure.get("argv") if isinstance(measure, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise RunnerError("bundle.json: measure.argv must be a non-empty list of strings (the trtexec command); rebuild the bundle")
    files = measure.get("input_files", {})
    names = {s["name"] for s in bundle["inputs"]}
    if not isinstance(files, dict) or not all(isinstance(f, str) and n in names for n, f in files.items()):
        raise RunnerError(f"bundle.json: measure.input_files must map input names ({', '.join(sorted(names))}) to files in the bundle")
    for name, file in files.items():
        bundle_file(bundle_dir, file, f"input file of '{name}'")
    given = {a.split("=", 1)[0] for a in argv[1:]}
    extra = [flag + value for flag, value in (("--iterations", f"={runs}"), ("--duration", "=0"), ("--exposeDMA", ""),
                                              ("--exportTimes", f"={times}")) if flag not in given]
    return [trtexec, *argv[1:], *extra]


def measure_tensorrt(bundle_dir: Path, bundle: Dict[str, Any], runs: int, warmup: int) -> Measured:
    """Build the engine on this device with the bundle's build_engine.sh, then time it with trtexec;
    samples are trtexec's per-query latencies (--exportTimes). `warmup` is not used: trtexec warms
    up for a time (the bundle's --warmUp, else trtexec's 200 ms)."""
    trtexec = find_trtexec()
    helper = load_helper(bundle_dir, str((bundle.get("measure") or {}).get("parser") or "trtexec.py"), "trtexec helper")
    bundle_file(bundle_dir, "build_engine.sh", "engine build script")
    times = bundle_dir / Path(str((bundle.get("measure") or {}).get("export_times", "times.json"))).name
    argv = trtexec_argv(bundle_dir, bundle, trtexec, times.name, runs)  # checked before the (long) engine build
    bash = shutil.which("bash")
    if not bash:
        raise RunnerError("bash not found on this device; build_engine.sh needs it", EXIT_MISSING)
    build = subprocess.run([bash, "build_engine.sh"], cwd=str(bundle_dir), capture_output=True, text=True,
                           env={**os.environ, "TRTEXEC": trtexec}, check=False)
    (bundle_dir / "build_engine.log").write_text(build.stdout + build.stderr, encoding="utf-8")
    if build.returncode != 0:  # the script's own codes: 2 bundle altered, 3 TensorRT missing or too old
        raise RunnerError(f"build_engine.sh exited {build.returncode}: {_last_line(build.stderr or build.stdout)} "
                          f"(log: {bundle_dir / 'build_engine.log'})", build.returncode if build.returncode in (2, 3) else EXIT_RUNTIME)
    bundle_file(bundle_dir, str(bundle.get("engine", "model.plan")), "TensorRT engine (made by build_engine.sh)")
    times.unlink(missing_ok=True)
    proc = subprocess.run(argv, cwd=str(bundle_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    code, output = proc.returncode, proc.stdout
    (bundle_dir / "trtexec.log").write_text(output, encoding="utf-8")
    if code != 0 or not times.is_file():
        raise RunnerError(f"trtexec exited {code}{'' if code else ' but wrote no ' + times.name}: {_last_line(output)} "
                          f"(log: {bundle_dir / 'trtexec.log'})", EXIT_RUNTIME)
    try:
        summary = helper.parse_performance_summary(output)
        samples = [float(v) for v in helper.parse_exported_times(times.read_text(encoding="utf-8"))]
    except ValueError as exc:
        raise RunnerError(f"cannot read trtexec's results: {_first_line(exc)}", EXIT_RUNTIME) from exc
    latency = {**summarize(samples), "samples_ms": samples, "batch": bundle_batch(bundle),
               "intra_op_threads": None, "peak_rss_mb": None, "engine_rss_mb": None}
    details = {"argv": argv[1:], "trtexec_summary": summary,
               "note": "samples are trtexec's per-query latency (H2D + compute + D2H), one query at a time; memory "
                       "is not measured (engine memory on the GPU is not in a process's resident set)"}
    return latency, f"TensorRT {summary.get('trt_version') or 'unknown'}", details


# ------------------------------------------------------------------ main

MEASURE = {"onnxruntime-cpu": measure_onnxruntime_cpu, "qnn-htp": measure_qnn_htp, "tensorrt": measure_tensorrt}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    """Through a temp file beside it and a rename: a reader never sees half a result."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise RunnerError(f"{message} (usage: python3 run_on_device.py --bundle DIR --out FILE [--runs N] [--warmup N])")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = _Parser(prog="run_on_device.py", description="Measure an edgekd bundle's latency on this device.")
    parser.add_argument("--bundle", required=True, help="the bundle folder (holds bundle.json)")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    parser.add_argument("--runs", type=int, default=300, help="timed runs (default 300)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed runs first (default 50; TensorRT warms up by time)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        raise RunnerError(f"--runs must be >= 1 and --warmup >= 0; got {args.runs} and {args.warmup}")
    return args


def run(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists():
        out.unlink()  # a failed run must not leave the previous result to be read as this one's
    bundle_dir = Path(args.bundle)
    bundle = load_bundle(bundle_dir)
    latency, version, details = MEASURE[bundle["runtime"]](bundle_dir, bundle, args.runs, args.warmup)
    result = {"schema": SCHEMA, "device": device_info(), "target": bundle.get("target"), "runtime": bundle["runtime"],
              "runtime_version": version, "runtime_details": details, "model": bundle["model"],
              "inputs": [{k: spec.get(k) for k in ("name", "dtype", "shape", "role")} for spec in bundle["inputs"]],
              "latency": latency,
              "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(out, result)
    return result


def main(argv: Optional[List[str]] = None) -> int:
    try:
        run(argv)
    except RunnerError as exc:
        print(f"run_on_device: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
