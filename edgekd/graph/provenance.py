"""Provenance carried by the artefacts themselves: `edgekd.*` entries in the metadata_props of every
ONNX file a build writes (student.onnx, student_int8.onnx, the engine/bundle models) and the
props JSON in the header of student.safetensors. This module stamps and reads them; what a
distillation build stamps is edgekd.distill.provenance's.

The props hold no clock and no absolute path: each value depends only on what the cache key of the
stage that writes it covers (through its inputs' hashes: student.safetensors carries the teacher and
distillation settings into the export stage's key, student.onnx into the quantize stage's, and so on;
the compile stage's key has the target), so a cached artefact never carries another build's provenance
and stamping adds nothing that differs from one run to the next."""
from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from edgekd.common.fsutil import atomic_write_bytes, atomic_write_text
from edgekd.common.tempdirs import temp_dir

PREFIX = "edgekd."


def read_onnx_props(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file (weights in external data files are not read)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def stamp_onnx(path: Path, values: dict[str, str]) -> None:
    """Replace the edgekd.* metadata_props of `path` with `values` (other props and the graph are kept),
    rewriting the file atomically, and only when they differ."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    current = [(p.key, p.value) for p in model.metadata_props]
    wanted = [kv for kv in current if not kv[0].startswith(PREFIX)] + sorted(values.items())
    if current == wanted:
        return
    del model.metadata_props[:]
    for key, value in wanted:
        model.metadata_props.add(key=key, value=value)
    atomic_write_bytes(path, model.SerializeToString())


@contextmanager
def stamped_inputs(inputs: dict[str, Path], values: dict[str, str]) -> Iterator[dict[str, Path]]:
    """`inputs` with every .onnx file replaced by a copy of the same name stamped with `values`, for
    a backend to compile from: what it copies or derives carries the props, and the hashes it records
    (engine.json, bundle.json, a build script's check) are of the stamped files."""
    with temp_dir("stamp") as tmp:
        stamped = dict(inputs)
        for name, path in inputs.items():
            if path.suffix == ".onnx":
                stamped[name] = Path(tmp) / name
                shutil.copyfile(path, stamped[name])
                stamp_onnx(stamped[name], values)
        yield stamped


def restamp_outputs(out: Path, values: dict[str, str]) -> list[str]:
    """Stamp every model under out/engine and out/bundle that lacks `values` (a runtime that drops
    metadata_props when it writes a model) and update its sha256 in engine.json and bundle.json.
    Returns the models stamped here, relative to `out`."""
    from edgekd.common.artefacts import BUNDLE_DIR, ENGINE_DIR, ENGINE_JSON

    changed = []
    for model in sorted(p for d in (ENGINE_DIR, BUNDLE_DIR) if (out / d).is_dir() for p in (out / d).rglob("*.onnx")):
        if {k: v for k, v in read_onnx_props(model).items() if k.startswith(PREFIX)} != values:
            stamp_onnx(model, values)
            changed.append(model)
    bundle_json = out / BUNDLE_DIR / "bundle.json"
    if changed:
        rewritten = _rehash(bundle_json, out / BUNDLE_DIR, changed)  # first: engine.json hashes bundle.json too
        _rehash(out / ENGINE_JSON, out, changed + ([bundle_json] if rewritten else []))
    return [str(m.relative_to(out)) for m in changed]


def _rehash(manifest: Path, base: Path, models: list[Path]) -> bool:
    """Update the sha256 of `models` in the "files" map (paths relative to `base`) of a JSON manifest;
    returns whether the manifest changed."""
    from edgekd.common.fsutil import sha256_file

    if not manifest.is_file():
        return False
    text = manifest.read_text()
    data = json.loads(text)
    files = data.get("files", {})
    names = {str(m.relative_to(base)): m for m in models if m.is_relative_to(base)}
    hits = {name: sha256_file(m) for name, m in names.items() if name in files}
    if hits:
        files.update(hits)
        atomic_write_text(manifest, json.dumps(data, indent=1) + ("\n" if text.endswith("\n") else ""))
    return bool(hits)


