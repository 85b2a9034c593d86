"""distill: the student learns from the teacher (or the last assistant) with the configured losses."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.distill.provenance import lineage_notes, weights_metadata
from edgekd.distill.weights import save_weights, size_metrics
from edgekd.errors import ConfigError
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
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.trainer import build_objective, distill, predict

    cfg = ctx.project.distill
    source = teacher_of_student(ctx, inputs)
    student, described = build_student(ctx, inputs["student.json"])
    objective = build_objective(cfg)
    if objective.teacher_layers() and not source.has_features:
        raise ConfigError(f"{ctx.source}: key 'distill.losses': feature losses need a torch teacher, and the teacher is "
                          f"{source.describe()}", "use logit losses (kd, hinton, dkd) with black-box teachers")
    train = ctx.data.train
    logits, how = None, "teacher run every step"
    if objective.needs_teacher_logits() and (cfg.teacher_logit_cache or not isinstance(source, TorchTeacher)):
        logits, hit = cached_teacher_logits(source, train.x, ctx.cache_root / "teacher-logits", train.sha256(), None)
        how = "teacher logits from the cache (computed in an earlier build)" if hit else "teacher logits computed once and cached"
    features, layers = None, objective.teacher_layers()
    if layers:  # feature losses have a TorchTeacher (checked above)
        from edgekd.distill.feature_cache import features_for_training

        features, feature_how = features_for_training(source, train, layers, cfg, ctx.cache_root)  # type: ignore[arg-type]
        how = f"{how}; {feature_how}"
    module = source.module if isinstance(source, TorchTeacher) else None
    losses = distill(student, train, cfg, objective, logits, module, teacher_features=features)
    save_weights(student, out / "student.safetensors", weights_metadata(ctx, "distill"))
    metrics = {metric_key(ctx, "student"): quality_metric(ctx, predict(student, ctx.data.test.x), torch_where()),
               **size_metrics(student, ctx.data.input_shape, "student")}
    terms = " + ".join(f"{s.weight:g}*{s.name}{s.params or ''}" for s in cfg.losses)
    notes = [f"student {described}; objective {terms} (T={cfg.temperature}, alpha={cfg.alpha} where unset)",
             f"{cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed}; final loss {losses[-1]:.4f}; {how}",
             f"teacher: {source.describe()}", *lineage_notes(ctx)]
    return Outcome(metrics, notes)



DISTILL = Stage("distill", "distill the student from the teacher (or the last assistant) with the configured losses",
                ("student.json", "teacher.json", "teacher.safetensors?", "assistant.json", "assistant.safetensors?"), ("student.safetensors",),
                ("torch", "safetensors", "onnxruntime"),
                lambda c: {"teacher": c.project.teacher.model_dump(), "distill": c.project.distill.model_dump(), **data_key(c)}, run_distill)
