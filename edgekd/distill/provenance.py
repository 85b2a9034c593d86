"""What a distillation build stamps on the models and weights it writes and puts in its report: the
edgekd.* props (version, producer, generation, teacher and data identity, distill settings) and the
lineage of teacher -> assistants -> student (edgekd.distill.lineage)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.common.version import __version__
from edgekd.config.provenance import settings
from edgekd.distill import lineage

if TYPE_CHECKING:
    from edgekd.stages.context import Context


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



def data_facts(ctx: Context) -> dict[str, Any]:
    """The data as the report and model card name it: its fingerprint, the factory, the source's own
    description, the first model input's per-sample shape, the number of classes (None where the data
    has none) and the samples per split (num_samples, counted by streaming where a source cannot tell)."""
    from edgekd.data.sources import SPLITS
    from edgekd.distill.streaming import count_samples

    source, cfg = ctx.data_source, ctx.project.data
    spec = source.spec()
    return {"sha256": ctx.data_sha256, "factory": cfg.factory, "args": cfg.args, "description": source.describe(),
            "input_shape": list(spec.inputs[0].shape), "num_classes": spec.num_classes,
            "splits": {name: count_samples(source, name) for name in SPLITS},
            **({"files": dict(cfg.files)} if cfg.files else {})}



def report_sections(ctx: Context, out_dir: Path) -> dict[str, Any]:
    """report.json's provenance, lineage and warnings (MODEL_CARD.md is written from them)."""
    source = lineage.teacher(ctx)
    lin = lineage.lineage(ctx, source)
    chosen = out_dir / "student.json"
    student = {k: v for k, v in json.loads(chosen.read_text()).items() if k in ("factory", "args")} if chosen.is_file() else None
    provenance = {"teacher": source, "assistants": [{**a.model_dump(), "generation": lin["teacher_generation"] + i}
                                                    for i, a in enumerate(ctx.project.teacher.assistants, start=1)],
                  "student": student, "data": data_facts(ctx), "distill": ctx.project.distill.model_dump()}
    return {"provenance": provenance, "lineage": lin, "warnings": lineage.warnings(lin),
            "settings": settings(ctx.project_file, ctx.target_file, ctx.profile_file)}



def lineage_notes(ctx: Context) -> list[str]:
    """The distill stage's notes on the student's generation (and the decay warning)."""
    source = lineage.teacher(ctx)
    lin = lineage.lineage(ctx, source)
    links = len(ctx.project.teacher.assistants)
    via = f" + {links} teacher assistant(s)" if links else ""
    note = (f"lineage: student generation {lin['generation']} = teacher generation {source['generation']} "
            f"({source['generation_source']}){via} + 1 distillation")
    return [note, *(f"WARNING: {w}" for w in lineage.warnings(lin))]

