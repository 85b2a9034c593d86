#!/usr/bin/env python3
"""edgekd device-side runner: measures a bundle's batch latency on the machine it runs on.

    python3 run_on_device.py --bundle DIR --out result.json [--runs N] [--warmup N]

STANDALONE on purpose: it is copied into every bundle and run on the device, where edgekd is not
installed; it needs only the standard library, numpy and the bundle's runtime. Python >= 3.8.
DIR/bundle.json (format "edgekd-ort-bundle/3" or "edgekd-tensorrt-bundle/3"; older or unknown
formats are refused): {"runtime": "onnxruntime-cpu" | "qnn-htp" | "tensorrt", "model": FILE,
"inputs": [{"name", "dtype", "shape", "role", "batch_axis", "vocab_size", ...}, ...] (every model
input), "feedgen": "feedgen.py", "runtimes": "device_runtimes.py", "session": {...}, "qnn": {...},
"target": NAME; tensorrt: "engine" (what build_engine.sh writes), "measure": {"argv",
"export_times", "input_files"}}. Other keys are ignored. The runner checks the bundle, describes the
device and writes the result; the bundle's device_runtimes.py (edgekd/deploy/device_runtimes.py)
measures the runtime, handed a Job: the bundle and this runner's helpers. ONNX Runtime gets a value
for every input from the bundle's feedgen.py (token ids inside the vocabulary, masks of ones, empty
past, ...); trtexec gets the same values from the bundle's input files (--loadInputs). Exit codes:
0 ok; 2 bad arguments or bundle; 3 the runtime is missing on this device; 4 the runtime failed
loading or running the model. Errors are one line.
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
from typing import Any, Callable, Dict, List, Optional

import numpy as np

SCHEMA = "edgekd-device-result/2"
# format -> runtimes. /3: the bundle carries device_runtimes.py, which this runner measures with
# (a /2 bundle has none); the Job interface it is handed belongs to the format too.
FORMATS = {"edgekd-ort-bundle/3": ("onnxruntime-cpu", "qnn-htp", "openvino"), "edgekd-tensorrt-bundle/3": ("tensorrt",)}
SESSION_KEYS = ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads", "execution_mode", "config_entries")
RUNTIMES = "device_runtimes.py"  # bundle.json "runtimes" when unset
EXIT_USER, EXIT_MISSING, EXIT_RUNTIME = 2, 3, 4

Latency = Dict[str, Any]


class RunnerError(Exception):
    """A failure the runner reports as one line on stderr and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


def usable_cores() -> int:
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
        "cores": usable_cores(),
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
    for key in ("session", "qnn", "openvino"):
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
    """A Python module the bundle carries (edgekd's feedgen.py, device_runtimes.py or trtexec.py), loaded from its file."""
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


def load_runtimes(bundle_dir: Path, bundle: Dict[str, Any]) -> Any:
    """The bundle's device_runtimes.py (edgekd.deploy.device_runtimes): measure(job) for every runtime."""
    name = str(bundle.get("runtimes") or RUNTIMES)
    what = "device runtimes module"
    try:
        bundle_file(bundle_dir, name, what)
    except RunnerError as exc:
        raise RunnerError(f"{exc}: this runner measures every runtime with it; rebuild the bundle "
                          "(edgekd build or edgekd compile)") from None
    module = load_helper(bundle_dir, name, what)
    if not callable(getattr(module, "measure", None)):
        raise RunnerError(f"{what} '{name}' in bundle {bundle_dir} has no measure(job); rebuild the bundle")
    return module


# ------------------------------------------------------------------ what device_runtimes.py is handed


class Job:
    """One measurement, as device_runtimes.measure() gets it: the bundle, the timed and warm-up
    runs, and this runner's helpers (that module is loaded from the bundle and cannot import this one)."""

    EXIT_USER, EXIT_MISSING, EXIT_RUNTIME = EXIT_USER, EXIT_MISSING, EXIT_RUNTIME

    def __init__(self, bundle_dir: Path, bundle: Dict[str, Any], runs: int, warmup: int) -> None:
        self.bundle_dir, self.bundle, self.runs, self.warmup = bundle_dir, bundle, runs, warmup

    def error(self, message: str, code: int = EXIT_USER, cause: Optional[BaseException] = None) -> RunnerError:
        """The runner's error; with `cause`, its first line follows the message."""
        return RunnerError(message if cause is None else f"{message}: {_first_line(cause)}", code)

    def file(self, name: str, what: str) -> Path:
        return bundle_file(self.bundle_dir, name, what)

    def helper(self, name: str, what: str) -> Any:
        return load_helper(self.bundle_dir, name, what)

    def feeds(self) -> Dict[str, np.ndarray]:
        return make_feeds(self.bundle_dir, self.bundle)

    def time_runs(self, run_once: Callable[[], object]) -> List[float]:
        return time_runs(run_once, self.runs, self.warmup)

    def latency(self, samples: List[float], **fields: Any) -> Latency:
        """summarize(samples), the samples, the bundle's batch, then `fields`."""
        return {**summarize(samples), "samples_ms": samples, "batch": bundle_batch(self.bundle), **fields}

    def memory_mb(self, field: str) -> Optional[float]:
        return memory_mb(field)

    def usable_cores(self) -> int:
        return usable_cores()


# ------------------------------------------------------------------ main


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
    runtimes = load_runtimes(bundle_dir, bundle)
    latency, version, details = runtimes.measure(Job(bundle_dir, bundle, args.runs, args.warmup))
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
