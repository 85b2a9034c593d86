"""Deploy bundles for ONNX Runtime targets (x86 CPU, QNN HTP): the model files, bundle.json and the
device-side runner (run_on_device.py, with device_runtimes.py, the per-runtime measurement it loads
from the bundle), which `edgekd bench --device` or a person runs on the device.

Every bundle (this one and the TensorRT one) also carries feedgen.py, a copy of
edgekd/graph/feedgen.py (numpy only): the runner loads it from the bundle to make a value for
every model input (token ids inside the vocabulary, masks of ones, empty past key/values, ...)
from the inputs bundle.json records (edgekd.graph.inputs.ResolvedInput.to_json(): name, dtype,
shape, role, batch_axis, vocab_size, sources).

bundle.json (format "edgekd-ort-bundle/3"): runtime, target, model (the file to load), inputs,
feedgen, runtimes, files (sha256 of every copied file but the runner), runner, and the runtime's
settings (session, qnn). Format 3 is format 2 plus device_runtimes.py ("runtimes"), which the
runner needs: it refuses format 2 bundles.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.common.fsutil import atomic_copy, atomic_write_text, sha256_file
from edgekd.graph import feedgen
from edgekd.graph.inputs import ModelInputs

RUNNER = Path(__file__).with_name("run_on_device.py")
RUNTIMES = Path(__file__).with_name("device_runtimes.py")  # the runner loads it from the bundle
FEEDGEN = Path(feedgen.__file__)
FORMAT = "edgekd-ort-bundle/3"  # run_on_device.py FORMATS must name it


def copy_runner(bundle_dir: Path) -> None:
    """run_on_device.py and the device_runtimes.py it measures with into the bundle."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    for path in (RUNNER, RUNTIMES):
        atomic_copy(path, bundle_dir / path.name)


def copy_feedgen(bundle_dir: Path) -> Path:
    """feedgen.py into the bundle (the runner's feed generator); returns its path there."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    atomic_copy(FEEDGEN, bundle_dir / FEEDGEN.name)
    return bundle_dir / FEEDGEN.name


def write_ort_bundle(bundle_dir: Path, runtime: str, model_files: list[Path], target_name: str,
                     inputs: ModelInputs, **settings: Any) -> None:
    """Copy `model_files` (the first is the model to load), the runner, device_runtimes.py and
    feedgen.py, and write bundle.json beside them with every input of `inputs` (the shapes the
    runner feeds)."""
    copy_runner(bundle_dir)
    copy_feedgen(bundle_dir)
    for path in model_files:
        atomic_copy(path, bundle_dir / path.name)
    copied = [p.name for p in model_files] + [FEEDGEN.name, RUNTIMES.name]
    manifest = {
        "format": FORMAT, "runtime": runtime, "target": target_name,
        "model": model_files[0].name, "inputs": [i.to_json() for i in inputs.inputs], "feedgen": FEEDGEN.name,
        "runtimes": RUNTIMES.name,
        "files": {name: sha256_file(bundle_dir / name) for name in copied},
        "runner": RUNNER.name, **settings,
    }
    atomic_write_text(bundle_dir / "bundle.json", json.dumps(manifest, indent=1) + "\n")
