#!/usr/bin/env python3
"""edgekd device-side runner: measures a bundle's batch latency on the machine it runs on.

    python3 run_on_device.py --bundle DIR --out result.json [--runs N] [--warmup N]

STANDALONE on purpose: it is copied into every bundle and run on the device, where edgekd is not
installed; it needs only the standard library, numpy and the bundle's runtime. Python >= 3.8.
DIR/bundle.json: {"runtime": "onnxruntime-cpu" | "qnn-htp" | "tensorrt", "model": FILE,
"input_shape": [1, ...], "input_name": "input", "session": {...}, "qnn": {...}, "target": NAME;
tensorrt: "engine" (what build_engine.sh writes), "measure": {"argv", "export_times"}}. Other
keys are ignored. Exit codes: 0 ok; 2 bad arguments or bundle; 3 the runtime is missing on this
device; 4 the runtime failed loading or running the model. Errors are one line on stderr.
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

SCHEMA = "edgekd-device-result/1"
RUNTIMES = ("onnxruntime-cpu", "qnn-htp", "tensorrt")
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
# summarize() is also edgekd.bench's (it imports it from here); memory_mb() twins edgekd.bench._memory_mb:
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
    if bundle.get("runtime") not in RUNTIMES:
        raise RunnerError(f"{path}: 'runtime' is {bundle.get('runtime')!r}; expected one of {', '.join(RUNTIMES)}")
    if not isinstance(bundle.get("model"), str) or not bundle["model"]:
        raise RunnerError(f"{path}: 'model' must name a file in the bundle")
    shape = bundle.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise RunnerError(f"{path}: 'input_shape' must be a list of positive integers, e.g. [1, 64]; got {shape!r}")
    for key in ("session", "qnn"):
        if not isinstance(bundle.get(key, {}), dict):
            raise RunnerError(f"{path}: '{key}' must be a JSON object")
    unknown = sorted(set(bundle.get("session", {})) - set(SESSION_KEYS))
    if unknown:
        raise RunnerError(f"{path}: unknown key(s) in 'session': {', '.join(unknown)}; known: {', '.join(SESSION_KEYS)}")
    return bundle


def bundle_file(bundle_dir: Path, name: str, what: str) -> Path:
    """A file named by bundle.json; it must exist and stay inside the bundle."""
    path = (bundle_dir / name).resolve()
    if bundle_dir.resolve() not in path.parents:
        raise RunnerError(f"{what} '{name}' is outside the bundle {bundle_dir}")
    if not path.is_file():
        raise RunnerError(f"{what} '{name}' not found in bundle {bundle_dir}")
    return path


# ------------------------------------------------------------------ ONNX Runtime (CPU and QNN)

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(uint16)": np.uint16,
               "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


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


def _measure_session(open_session: Callable[[], Any], bundle: Dict[str, Any], runs: int, warmup: int, threads: Optional[int]) -> Latency:
    """Open the session (memory counted), feed a seeded random input of the bundle's shape, time it."""
    before_mb = memory_mb("VmRSS")
    try:
        session = open_session()
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise RunnerError(f"onnxruntime could not load {bundle['model']}: {_first_line(exc)}", EXIT_RUNTIME) from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise RunnerError(f"{bundle['model']} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); the runner feeds exactly one")
    name = bundle.get("input_name") or inputs[0].name
    if name != inputs[0].name:
        raise RunnerError(f"bundle.json input_name is {name!r} but {bundle['model']} has input {inputs[0].name!r}")
    dtype = _ORT_DTYPES.get(inputs[0].type)
    if dtype is None:
        raise RunnerError(f"input {name!r} has type {inputs[0].type}, which the runner cannot generate")
    rng = np.random.default_rng(0)
    shape = tuple(bundle["input_shape"])
    x = rng.standard_normal(shape).astype(dtype) if np.issubdtype(dtype, np.floating) else rng.integers(0, 8, shape).astype(dtype)
    feed = {name: x}
    try:
        samples = time_runs(lambda: session.run(None, feed), runs, warmup)
    except Exception as exc:
        raise RunnerError(f"onnxruntime failed running {bundle['model']}: {_first_line(exc)}", EXIT_RUNTIME) from exc
    after_mb = memory_mb("VmRSS")
    return {**summarize(samples), "samples_ms": samples, "batch": int(shape[0]), "intra_op_threads": threads,
            "peak_rss_mb": memory_mb("VmHWM"),
            "engine_rss_mb": None if after_mb is None or before_mb is None else after_mb - before_mb}


def measure_onnxruntime_cpu(bundle_dir: Path, bundle: Dict[str, Any], runs: int, warmup: int) -> Measured:
    ort = _import("onnxruntime", "install it with: pip install onnxruntime")
    model = bundle_file(bundle_dir, bundle["model"], "model")
    opts, threads = _session_options(ort, bundle.get("session", {}))
    latency = _measure_session(lambda: ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"]),
                               bundle, runs, warmup, threads)
    return latency, f"onnxruntime {ort.__version__}", {"providers": ["CPUExecutionProvider"]}


def measure_qnn_htp(bundle_dir: Path, bundle: Dict[str, Any], runs: int, warmup: int) -> Measured:
    """The QNN EP as a plugin (onnxruntime-qnn 2.x on onnxruntime >= 1.24), loading the context model."""
    ort = _import("onnxruntime", "install it with: pip install onnxruntime")
    qnn = _import("onnxruntime_qnn", "install it with: pip install onnxruntime-qnn")
    model = bundle_file(bundle_dir, bundle["model"], "QNN context model")
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

    latency = _measure_session(open_session, bundle, runs, warmup, threads)
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


def load_trtexec_helper(bundle_dir: Path) -> Any:
    """edgekd's trtexec.py (parse_performance_summary, parse_exported_times; stdlib only): the
    bundle's copy, else one beside this script."""
    for path in (bundle_dir / "trtexec.py", Path(__file__).resolve().parent / "trtexec.py"):
        if path.is_file():
            spec = importlib.util.spec_from_file_location("edgekd_bundle_trtexec", path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            return module
    raise RunnerError(f"trtexec.py not found in bundle {bundle_dir} nor beside {Path(__file__).name}; rebuild the bundle with edgekd build")


def trtexec_argv(bundle: Dict[str, Any], trtexec: str, engine: str, times: str, runs: int) -> List[str]:
    """bundle.json's measure.argv (the target's settings: DLA core, warm-up, ...) with this device's
    trtexec as argv[0], else a plain --loadEngine one; then, unless the bundle sets them:
    --iterations=RUNS, --duration=0 (so --runs means what it says), --exposeDMA (one inference at a
    time, as ORT's session.run loop: overlapped copies would add queueing to each latency)."""
    argv = (bundle.get("measure") or {}).get("argv")
    if argv is None:
        argv = ["trtexec", f"--loadEngine={engine}", "--percentile=90,95,99"]
        if bundle.get("input_name"):
            argv.append(f"--shapes={bundle['input_name']}:{'x'.join(str(d) for d in bundle['input_shape'])}")
    elif not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise RunnerError("bundle.json: measure.argv must be a non-empty list of strings")
    given = {a.split("=", 1)[0] for a in argv[1:]}
    extra = [flag + value for flag, value in (("--iterations", f"={runs}"), ("--duration", "=0"), ("--exposeDMA", ""),
                                              ("--exportTimes", f"={times}")) if flag not in given]
    return [trtexec, *argv[1:], *extra]


def measure_tensorrt(bundle_dir: Path, bundle: Dict[str, Any], runs: int, warmup: int) -> Measured:
    """Build the engine on this device with the bundle's build_engine.sh, then time it with trtexec;
    samples are trtexec's per-query latencies (--exportTimes). `warmup` is not used: trtexec warms
    up for a time (the bundle's --warmUp, else trtexec's 200 ms)."""
    trtexec = find_trtexec()
    helper = load_trtexec_helper(bundle_dir)
    bundle_file(bundle_dir, "build_engine.sh", "engine build script")
    bash = shutil.which("bash")
    if not bash:
        raise RunnerError("bash not found on this device; build_engine.sh needs it", EXIT_MISSING)
    build = subprocess.run([bash, "build_engine.sh"], cwd=str(bundle_dir), capture_output=True, text=True,
                           env={**os.environ, "TRTEXEC": trtexec}, check=False)
    (bundle_dir / "build_engine.log").write_text(build.stdout + build.stderr, encoding="utf-8")
    if build.returncode != 0:  # the script's own codes: 2 bundle altered, 3 TensorRT missing or too old
        raise RunnerError(f"build_engine.sh exited {build.returncode}: {_last_line(build.stderr or build.stdout)} "
                          f"(log: {bundle_dir / 'build_engine.log'})", build.returncode if build.returncode in (2, 3) else EXIT_RUNTIME)
    engine = bundle_file(bundle_dir, str(bundle.get("engine", "model.plan")), "TensorRT engine (made by build_engine.sh)")
    times = bundle_dir / Path(str((bundle.get("measure") or {}).get("export_times", "times.json"))).name
    times.unlink(missing_ok=True)
    argv = trtexec_argv(bundle, trtexec, engine.name, times.name, runs)
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
    latency = {**summarize(samples), "samples_ms": samples, "batch": int(bundle["input_shape"][0]),
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
              "input_shape": bundle["input_shape"], "latency": latency,
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
