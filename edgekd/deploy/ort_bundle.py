"""Deploy bundles for ONNX Runtime targets (x86 CPU, QNN HTP): the model files, bundle.json and the
device-side runner (run_on_device.py), which `edgekd bench --device` or a person runs on the device."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.fsutil import atomic_copy, atomic_write_text, sha256_file

RUNNER = Path(__file__).with_name("run_on_device.py")


def copy_runner(bundle_dir: Path) -> None:
    bundle_dir.mkdir(parents=True, exist_ok=True)
    atomic_copy(RUNNER, bundle_dir / RUNNER.name)


def write_ort_bundle(bundle_dir: Path, runtime: str, model_files: list[Path], target_name: str,
                     input_shape: tuple[int, ...], **settings: Any) -> None:
    """Copy `model_files` (the first is the model to load) and write bundle.json beside them."""
    copy_runner(bundle_dir)
    for path in model_files:
        atomic_copy(path, bundle_dir / path.name)
    manifest = {
        "format": "edgekd-ort-bundle/1", "runtime": runtime, "target": target_name,
        "model": model_files[0].name, "input_name": "input", "input_shape": list(input_shape),
        "files": {p.name: sha256_file(bundle_dir / p.name) for p in model_files},
        "runner": RUNNER.name, **settings,
    }
    atomic_write_text(bundle_dir / "bundle.json", json.dumps(manifest, indent=1) + "\n")
