"""teacher: train the teacher on the train split, or load it (checkpoint, ONNX, logits files, ensemble)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.common.artefacts import TEACHER_WEIGHTS
from edgekd.distill.provenance import teacher_weights_metadata
from edgekd.distill.sources import teacher_files, teacher_source
from edgekd.distill.weights import save_weights, size_metrics
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Outcome, Stage
from edgekd.stages.common import describe_factory, metric_key, quality_metric, torch_where

if TYPE_CHECKING:
    from edgekd.stages.context import Context


def teacher_key(ctx: Context) -> dict[str, Any]:
    cfg = ctx.project.teacher
    trains = cfg.kind == "torch" and cfg.train is not None  # only a teacher trained here sees the augmentations
    return {"teacher": cfg.model_dump(), "files": teacher_files(ctx), "data": ctx.data_sha256, **(ctx.augment_key() if trains else {})}


NO_TEST_RUN = {"logits": "logits files hold soft labels for the training data only",
               "api": "an API teacher is a file of responses: there is no model to run on the test split"}


def _no_test_run(ctx: Context) -> str | None:
    """Why the teacher cannot be asked about the test split (None: it can)."""
    cfg = ctx.project.teacher
    kinds = [m.kind for m in cfg.members] if cfg.kind == "ensemble" else [cfg.kind]
    return next((NO_TEST_RUN[k] for k in kinds if k in NO_TEST_RUN), None)


def run_teacher(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.distill.streaming import count_samples
    from edgekd.distill.teachers import TorchTeacher, predict
    from edgekd.distill.trainer import train_supervised

    cfg = ctx.project.teacher
    metrics: dict[str, Metric] = {}
    if cfg.kind == "torch" and cfg.train is not None:
        model = ctx.build_model("teacher")
        losses = train_supervised(model, ctx.train_data, cfg.train)
        save_weights(model, out / TEACHER_WEIGHTS, teacher_weights_metadata(ctx))
        described = describe_factory(*ctx.factory_of(cfg, "teacher")[:2])
        source = TorchTeacher(model, None, f"{described}, trained here", task=ctx.task)
        augmented = f", augmented with {ctx.augment.describe()}" if ctx.augment is not None else ""
        samples = count_samples(ctx.data_source)
        notes = [f"teacher {described} trained here: {cfg.train.epochs} epochs on {samples} streamed samples{augmented}, final loss {losses[-1]:.4f}"]
    else:
        source = teacher_source(ctx, None)
        if isinstance(getattr(source, "inner", source), TorchTeacher):  # (aligned to the data's vocabulary or not)
            save_weights(source.module, out / TEACHER_WEIGHTS, teacher_weights_metadata(ctx))
        notes = [f"teacher: {source.describe()}"]
    if isinstance(getattr(source, "inner", source), TorchTeacher):
        metrics.update(size_metrics(source.module, _own_task(ctx, source), "teacher"))
    if ctx.project.data.teacher_text_column:
        data = ctx.project.data
        notes.append(f"cross-input: the teacher reads column '{data.teacher_text_column}' (max_length {data.teacher_max_length or data.max_length} "
                     f"tokens), the student '{data.text_column}' (max_length {data.max_length}); soft labels come from the teacher's view")
    why = _no_test_run(ctx)
    if why is None:
        where = torch_where() if isinstance(source, TorchTeacher) else source.describe()
        metrics[metric_key(ctx, "teacher")] = finite_or_why(quality_metric(ctx, predict(source, ctx.teacher_eval_arrays), where), source)
    else:
        metrics[metric_key(ctx, "teacher")] = Metric(None, ctx.metric.unit, "not available", why)
        notes.append(f"no teacher {ctx.metric.name}: {why}; the budgets measured against the teacher (distill_*, overall_*) "
                     "are not measured in this build")
    (out / "teacher.json").write_text(json.dumps({"kind": cfg.kind, "describe": source.describe(), "identity": source.identity()}, indent=1))
    return Outcome(metrics, notes)



def _own_task(ctx: Context, source: Any) -> Any:
    """The task the teacher's module is sized on: its own vocabulary when it is aligned to the data's."""
    import dataclasses

    alignment = getattr(source, "alignment", None)
    return ctx.teacher_task if alignment is None else dataclasses.replace(ctx.teacher_task, vocab_size=alignment.teacher_size)


def finite_or_why(metric: Metric, source: Any) -> Metric:
    """A teacher aligned to another vocabulary gives no probability to the data's tokens it lacks: a
    test set with such a next token has an infinite perplexity, which is said, not reported as a number."""
    import math

    if metric.value is None or math.isfinite(metric.value) or not hasattr(source, "alignment"):
        return metric
    return Metric(None, metric.unit, "not available", "the teacher reads another vocabulary (vocab_alignment = 'shared_tokens') "
                  "and has no counterpart for some of the test split's next tokens: its perplexity on the data's tokens is infinite")


TEACHER = Stage("teacher", "train the teacher on the train split (or load its checkpoint)",
                (), ("teacher.json",), ("torch", "safetensors", "onnxruntime"), teacher_key, run_teacher)
