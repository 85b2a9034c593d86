"""Measure a build's device bundle on the device itself: push it with the device-side runner, run
it there, pull the result back, check it, and keep it beside the build (`device_result.json`)."""
from __future__ import annotations

import hashlib
import json
import math
import secrets
from pathlib import Path
from typing import Any

from edgekd.common.fsutil import atomic_write_text, sha256_file
from edgekd.common.tempdirs import temp_dir
from edgekd.deploy.run_on_device import (  # the standalone runner's own constants
    FORMATS,
    SCHEMA,
)
from edgekd.errors import EdgekdError, ToolchainMissing
from edgekd.remote.transports import DeviceError, Transport, parse_device

RUNNER = Path(__file__).resolve().parent.parent / "deploy" / "run_on_device.py"
RESULT_FILE = "device_result.json"
LATENCY_KEYS = ("runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput_per_s")
_RUNNER_EXIT_MISSING = 3  # run_on_device.py: the runtime is not installed on the device


def bundle_digest(bundle_dir: Path, runner: Path = RUNNER) -> str:
    """sha256 over the bundle's files (relative names and contents) and the runner: the remote work
    folder is named by it, so a changed bundle never runs beside an old one's files."""
    digest = hashlib.sha256()
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(bundle_dir).as_posix().encode() + b"\0" + sha256_file(path).encode())
    digest.update(b"runner\0" + sha256_file(runner).encode())
    return digest.hexdigest()


def read_bundle(build_dir: Path) -> dict[str, Any]:
    """build_dir/bundle/bundle.json, checked to be a bundle format this edgekd's runner reads."""
    path = build_dir / "bundle" / "bundle.json"
    if not path.is_file():
        raise EdgekdError(f"build {build_dir} has no device bundle ({path} not found); run edgekd build first",
                          hint=f"edgekd build --target TARGET --out {build_dir}")
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EdgekdError(f"{path} is not valid JSON ({exc})", hint="rebuild with edgekd build") from exc
    found = bundle.get("format") if isinstance(bundle, dict) else None
    if found not in FORMATS:
        raise EdgekdError(f"{path}: bundle format {found!r} is not one this edgekd's device runner reads "
                          f"({', '.join(FORMATS)}); it was written by another edgekd version",
                          hint=f"rebuild it: edgekd build --target TARGET --out {build_dir}")
    return bundle


def bench_on_device(build_dir: Path, device_url: str, runs: int | None = None, *, python: str = "python3") -> dict[str, Any]:
    """Run `build_dir/bundle` on the device at `device_url` (see edgekd.remote.parse_device) and
    return its result, with `source` saying which device measured it. `runs`: timed runs (the
    runner's default when None). `python`: the device's Python 3 command."""
    build_dir = Path(build_dir)
    bundle_dir = build_dir / "bundle"
    bundle = read_bundle(build_dir)
    if runs is not None and runs < 1:
        raise EdgekdError(f"runs must be at least 1; got {runs}")
    transport = parse_device(device_url)
    workdir = f"{transport.work_root}/edgekd-{bundle_digest(bundle_dir)[:12]}"
    transport.push(bundle_dir, workdir)
    transport.push(RUNNER, workdir)
    # a fresh result name per run: a device whose adb reports no exit codes cannot hand back an old result
    out = f"result-{secrets.token_hex(4)}.json"
    argv = [python, RUNNER.name, "--bundle", "bundle", "--out", out] + (["--runs", str(runs)] if runs else [])
    proc = transport.run(argv, cwd=workdir)
    if proc.returncode != 0:
        raise _run_failed(proc.returncode, proc.stderr or proc.stdout, transport, workdir)
    with temp_dir("pull") as tmp:
        pulled = Path(tmp) / "result.json"
        transport.pull(f"{workdir}/{out}", pulled)
        result = validate_result(pulled.read_text(encoding="utf-8"), bundle, runs, transport.describe())
    result["source"] = f"measured on {transport.describe()}"
    atomic_write_text(build_dir / RESULT_FILE, json.dumps(result, indent=1) + "\n")
    return result


def _run_failed(code: int, output: str, transport: Transport, workdir: str) -> EdgekdError:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    message = f"{RUNNER.name} on {transport.describe()} exited {code}: {lines[-1] if lines else 'no output'}"
    if code == _RUNNER_EXIT_MISSING:
        return ToolchainMissing(message, hint="install the bundle's runtime on the device")
    return DeviceError(message, hint=f"to see more, run it by hand on the device in {workdir}: "
                                     f"python3 {RUNNER.name} --bundle bundle --out result.json")


def validate_result(text: str, bundle: dict[str, Any], runs: int | None, device: str) -> dict[str, Any]:
    """The pulled result as a dict, or DeviceError saying what is wrong with it."""
    def bad(reason: str) -> DeviceError:
        return DeviceError(f"result.json from {device} is not an edgekd device result: {reason}",
                           hint="the device ran another version of run_on_device.py; run edgekd bench again")

    try:
        result = json.loads(text)
    except ValueError as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(result, dict) or result.get("schema") != SCHEMA:
        raise bad(f"schema is {result.get('schema') if isinstance(result, dict) else None!r}, expected {SCHEMA!r}")
    if result.get("runtime") != bundle.get("runtime"):
        raise bad(f"runtime {result.get('runtime')!r} but the bundle's is {bundle.get('runtime')!r}")
    if not isinstance(result.get("device"), dict) or not result["device"].get("hostname"):
        raise bad("no device description")
    latency = result.get("latency")
    if not isinstance(latency, dict):
        raise bad("no latency")
    for key in LATENCY_KEYS:
        value = latency.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise bad(f"latency.{key} is {value!r}")
    samples = latency.get("samples_ms")
    if not isinstance(samples, list) or len(samples) != latency["runs"] or not all(isinstance(s, (int, float)) for s in samples):
        raise bad(f"latency.samples_ms must be a list of {latency['runs']} numbers")
    if runs is not None and bundle.get("runtime") != "tensorrt" and latency["runs"] != runs:  # trtexec may run a few more
        raise bad(f"{latency['runs']} timed runs, {runs} asked for")
    return result
