"""Provenance carried by the artefacts themselves: `edgekd.*` entries in the metadata_props of every
ONNX file a build writes (student.onnx, student_int8.onnx, the engine/bundle models) and the
`edgekd.provenance` JSON in the header of student.safetensors; and the report's provenance,
lineage and warnings objects, from which MODEL_CARD.md is written.

The props hold no clock and no absolute path: each value depends only on what the cache key of the
stage that writes it covers (through its inputs' hashes: student.safetensors carries the teacher and
distillation settings into the export stage's key, student.onnx into the quantize stage's, and so on;
the compile stage's key has the target), so a cached artefact never carries another build's provenance
and stamping adds nothing that differs from one run to the next."""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from edgekd import __version__, lineage
from edgekd.fsutil import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from edgekd.context import Context

PREFIX = "edgekd."


def props(ctx: Context, stage: str, target: bool = False) -> dict[str, str]:
    """The edgekd.* props of a model written by `stage`; `target`: the model is built for ctx's target
    (only the compile stage's are: export and quantize outputs are shared by targets)."""
    source = lineage.teacher(ctx)
    values = {
        "edgekd.version": __version__,
        "edgekd.producer": f"edgekd {__version__}, {stage} stage",
        "edgekd.generation": str(lineage.lineage(ctx, source)["generation"]),
        "edgekd.teacher_kind": source["kind"],
        "edgekd.teacher_sha256": source["sha256"],
        "edgekd.data_sha256": ctx.data_sha256,
        "edgekd.distill": json.dumps(ctx.project.distill.model_dump(), sort_keys=True),
    }
    if ctx.project.teacher.assistants:
        values["edgekd.assistants"] = json.dumps([a.model_dump() for a in ctx.project.teacher.assistants], sort_keys=True)
    if target:
        values |= {"edgekd.target": ctx.target_file.name, "edgekd.runtime": ctx.target.runtime}
    return values


def weights_metadata(ctx: Context, stage: str) -> dict[str, str]:
    """safetensors header metadata of the student: the same props as one canonical JSON value."""
    return {lineage.WEIGHTS_KEY: json.dumps(props(ctx, stage), sort_keys=True)}


def teacher_weights_metadata(ctx: Context, link: int = 0) -> dict[str, str]:
    """Header metadata of the build's teacher.safetensors (link 0) or of teacher-assistant `link`'s
    assistant.safetensors: its generation (the teacher's + link), so that a later build whose teacher
    checkpoint is this file counts on from it."""
    generation = lineage.teacher(ctx)["generation"] + link
    stage = f"teacher-assistant link {link}" if link else "teacher stage"
    data = {"edgekd.version": __version__, "edgekd.producer": f"edgekd {__version__}, {stage}", lineage.GENERATION: str(generation)}
    return {lineage.WEIGHTS_KEY: json.dumps(data, sort_keys=True)}


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
    with tempfile.TemporaryDirectory(prefix="edgekd-stamp-") as tmp:
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
    from edgekd.backends.base import BUNDLE_DIR, ENGINE_DIR, ENGINE_JSON

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
    from edgekd.fsutil import sha256_file

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


def _data(ctx: Context) -> dict[str, Any]:
    data, cfg = ctx.data, ctx.project.data
    return {"sha256": ctx.data_sha256, "factory": cfg.factory, "args": cfg.args, "description": data.description,
            "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "splits": {name: len(getattr(data, name)) for name in ("train", "calib", "test")}}


def report_sections(ctx: Context, out_dir: Path) -> dict[str, Any]:
    """report.json's provenance, lineage and warnings (MODEL_CARD.md is written from them)."""
    source = lineage.teacher(ctx)
    lin = lineage.lineage(ctx, source)
    chosen = out_dir / "student.json"
    student = {k: v for k, v in json.loads(chosen.read_text()).items() if k in ("factory", "args")} if chosen.is_file() else None
    provenance = {"teacher": source, "assistants": [{**a.model_dump(), "generation": lin["teacher_generation"] + i}
                                                    for i, a in enumerate(ctx.project.teacher.assistants, start=1)],
                  "student": student, "data": _data(ctx), "distill": ctx.project.distill.model_dump()}
    return {"provenance": provenance, "lineage": lin, "warnings": lineage.warnings(lin)}


def lineage_notes(ctx: Context) -> list[str]:
    """The distill stage's notes on the student's generation (and the decay warning)."""
    source = lineage.teacher(ctx)
    lin = lineage.lineage(ctx, source)
    links = len(ctx.project.teacher.assistants)
    via = f" + {links} teacher assistant(s)" if links else ""
    note = (f"lineage: student generation {lin['generation']} = teacher generation {source['generation']} "
            f"({source['generation_source']}){via} + 1 distillation")
    return [note, *(f"WARNING: {w}" for w in lineage.warnings(lin))]
