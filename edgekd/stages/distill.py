"""distill: the student learns from the teacher (or the last assistant) with the configured losses,
streaming the train split through the task (edgekd.distill.trainer.distill)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.distill.provenance import lineage_notes, weights_metadata
from edgekd.distill.weights import save_weights, size_metrics
from edgekd.errors import ConfigError
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Outcome, Stage
from edgekd.stages.common import (
    build_student,
    data_key,
    metric_key,
    quality_metric,
    teacher_of_student,
    torch_where,
)

if TYPE_CHECKING:
    from edgekd.stages.context import Context


def run_distill(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.distill.sequence_kd import student_data
    from edgekd.distill.teaching import plan_teaching
    from edgekd.distill.trainer import build_objective, distill

    cfg = ctx.project.distill
    source = teacher_of_student(ctx, inputs)  # aligned to the data's vocabulary where [distill] vocab_alignment asks
    student, described = build_student(ctx, inputs["student.json"])
    init_note = init_student(ctx, student, inputs)
    objective = build_objective(cfg)
    if objective.teacher_layers() and not source.has_features:
        raise ConfigError(f"{ctx.source}: key 'distill.losses': feature losses need a torch teacher, and the teacher is "
                          f"{source.describe()}", "use logit losses (kd, hinton, dkd) with black-box teachers")
    trained_on = student_data(ctx, source, objective)  # the real train split, or the teacher's sequences
    teaching = plan_teaching(source, trained_on.data, objective, cfg, ctx.cache_root)
    losses = distill(student, trained_on.data, cfg, objective, teaching)
    save_weights(student, out / "student.safetensors", weights_metadata(ctx, "distill"))
    metrics = {metric_key(ctx, "student"): quality_metric(ctx, ctx.task.predict(student, ctx.eval_feeds.arrays), torch_where()),
               **size_metrics(student, ctx.task, "student"), **trained_on.metrics}
    terms = " + ".join(f"{s.weight:g}*{s.name}{s.params or ''}" for s in cfg.losses)
    notes = [f"student {described}; objective {terms} (T={cfg.temperature}, alpha={cfg.alpha} where unset)",
             f"{cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed}; final loss {losses[-1]:.4f}; {teaching.note}",
             f"teacher: {source.describe()}", *trained_on.notes, *init_note, *lineage_notes(ctx)]
    if teaching.on_policy is not None:
        notes.insert(2, teaching.on_policy.note())
    aligned_metrics, aligned_notes = alignment_report(ctx, source)
    return Outcome(metrics | aligned_metrics, notes + aligned_notes)


def alignment_report(ctx: Context, source: Any) -> tuple[dict[str, Metric], list[str]]:
    """The aligned teacher's dropped probability mass on the eval split, as a metric and a note."""
    from edgekd.distill.vocab_align import AlignedTeacher, measure_dropped_mass

    if not isinstance(source, AlignedTeacher):
        return {}, []
    tally = measure_dropped_mass(source, ctx.eval_feeds.batches(ctx.project.distill.batch_size))
    how = (f"teacher probability on tokens without a counterpart in the data's vocabulary, mean over {tally.tokens} "
           f"eval tokens ({source.alignment.describe()}; {tally.unk_inputs} input tokens fed as the teacher's unk)")
    mean = tally.mean()
    metric = Metric(mean, "", "measured", how) if mean is not None else Metric(None, "", "not available", "no eval tokens")
    dropped = "not measured (no eval tokens)" if mean is None else f"{mean:.4f} per token (eval split)"
    note = (f"vocabularies aligned on shared tokens: {source.alignment.describe()}; the teacher read the data's "
            f"segmentation in its own ids; dropped teacher mass {dropped}")
    return {"distill.teacher_dropped_mass": metric}, [note]


def init_student(ctx: Context, student: Any, inputs: dict[str, Path]) -> list[str]:
    """[student.hf] init = "teacher": the student starts from the teacher's weights (DistilBERT-style;
    the teacher itself, not a teacher assistant); the note says what was copied."""
    from edgekd.common.artefacts import TEACHER_WEIGHTS
    from edgekd.distill.hf_models import init_from_teacher
    from edgekd.distill.sources import teacher_source

    hf = ctx.project.student.hf
    if hf is None or hf.init != "teacher":
        return []
    module = getattr(teacher_source(ctx, inputs.get(TEACHER_WEIGHTS)), "module", None)
    if module is None:
        raise ConfigError(f"{ctx.source}: key 'student.hf.init': init = 'teacher' copies a torch teacher's weights, "
                          f"and the teacher is {ctx.project.teacher.kind}", "leave init = 'random' for this teacher")
    return [init_from_teacher(student, module)]


def distill_key(ctx: Context) -> dict[str, Any]:
    return {"teacher": ctx.project.teacher.model_dump(), "distill": ctx.project.distill.model_dump(), **data_key(ctx),
            **ctx.augment_key()}


DISTILL = Stage("distill", "distill the student from the teacher (or the last assistant) with the configured losses",
                ("student.json", "teacher.json", "teacher.safetensors?", "assistant.json", "assistant.safetensors?"), ("student.safetensors",),
                ("torch", "safetensors", "onnxruntime"), distill_key, run_distill)
