"""The teacher and distill stages: get the teacher (train it, load it, or wrap an ONNX model /
logits files / an ensemble), then distill the student with the configured losses, the teacher's
logits computed once and cached across epochs and builds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.distill.sources import teacher_files, teacher_source
from edgekd.distill.weights import save_weights, size_metrics
from edgekd.errors import ConfigError
from edgekd.results import Metric
from edgekd.toolchain import version

if TYPE_CHECKING:
    from edgekd.context import Context
    from edgekd.stages import Outcome

TEACHER_WEIGHTS = "teacher.safetensors"


def torch_where() -> str:
    return f"torch {version('torch')} eager, CPU"


def teacher_key(ctx: Context) -> dict[str, Any]:
    return {"teacher": ctx.project.teacher.model_dump(), "files": teacher_files(ctx), "data": ctx.data_sha256}


def _runs_on_test(ctx: Context) -> bool:
    """Whether the teacher can be asked about the test split (logits files only cover training data)."""
    cfg = ctx.project.teacher
    kinds = [m.kind for m in cfg.members] if cfg.kind == "ensemble" else [cfg.kind]
    return "logits" not in kinds


def run_teacher(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.trainer import train_supervised
    from edgekd.stages import Outcome, accuracy_metric

    cfg = ctx.project.teacher
    metrics: dict[str, Metric] = {}
    if cfg.kind == "torch" and cfg.train is not None:
        model = ctx.build_model("teacher")
        losses = train_supervised(model, ctx.data.train, cfg.train)
        save_weights(model, out / TEACHER_WEIGHTS)
        source = TorchTeacher(model, None, f"torch module {cfg.factory}({cfg.args}), trained here")
        notes = [f"teacher trained here: {cfg.train.epochs} epochs on {len(ctx.data.train)} samples, final loss {losses[-1]:.4f}"]
    else:
        source = teacher_source(ctx, None)
        if isinstance(source, TorchTeacher):
            save_weights(source.module, out / TEACHER_WEIGHTS)
        notes = [f"teacher: {source.describe()}"]
    if isinstance(source, TorchTeacher):
        metrics.update(size_metrics(source.module, ctx.data.input_shape, "teacher"))
    if _runs_on_test(ctx):
        where = torch_where() if isinstance(source, TorchTeacher) else source.describe()
        metrics["teacher.accuracy"] = accuracy_metric(ctx, source.logits(ctx.data.test.x), where)
    else:
        metrics["teacher.accuracy"] = Metric(None, "%", "not available", "logits files hold soft labels for the training data only")
    (out / "teacher.json").write_text(json.dumps({"kind": cfg.kind, "describe": source.describe(), "identity": source.identity()}, indent=1))
    return Outcome(metrics, notes)


def _student(ctx: Context, inputs: dict[str, Path]) -> tuple[Any, str]:
    """The student module and its description: the project's factory, or the searched member."""
    if "student.json" in inputs:
        choice = json.loads(inputs["student.json"].read_text())
        return ctx.build_model_from(choice["factory"], choice["args"], "student.search"), f"{choice['factory']}({choice['args']})"
    cfg = ctx.project.student
    return ctx.build_model("student"), f"{cfg.factory}({cfg.args})"


def run_distill(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.trainer import build_objective, distill, predict
    from edgekd.stages import Outcome, accuracy_metric

    cfg = ctx.project.distill
    source = teacher_source(ctx, inputs.get(TEACHER_WEIGHTS))
    student, described = _student(ctx, inputs)
    objective = build_objective(cfg)
    if objective.teacher_layers() and not source.has_features:
        raise ConfigError(f"{ctx.source}: key 'distill.losses': feature losses need a torch teacher, and the teacher is "
                          f"{source.describe()}", "use logit losses (kd, hinton, dkd) with black-box teachers")
    train = ctx.data.train
    logits, how = None, "teacher run every step"
    if objective.needs_teacher_logits() and (cfg.teacher_logit_cache or not isinstance(source, TorchTeacher)):
        logits, hit = cached_teacher_logits(source, train.x, ctx.cache_root / "teacher-logits", train.sha256(), None)
        how = "teacher logits from the cache (computed in an earlier build)" if hit else "teacher logits computed once and cached"
    module = source.module if isinstance(source, TorchTeacher) else None
    losses = distill(student, train, cfg, objective, logits, module)
    save_weights(student, out / "student.safetensors")
    metrics = {"student.accuracy": accuracy_metric(ctx, predict(student, ctx.data.test.x), torch_where()),
               **size_metrics(student, ctx.data.input_shape, "student")}
    terms = " + ".join(f"{s.weight:g}*{s.name}{s.params or ''}" for s in cfg.losses)
    notes = [f"student {described}; objective {terms} (T={cfg.temperature}, alpha={cfg.alpha} where unset)",
             f"{cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed}; final loss {losses[-1]:.4f}; {how}",
             f"teacher: {source.describe()}"]
    return Outcome(metrics, notes)
