"""evaluate: the engine's quality on the held-out evaluation data; for a causal LM also the next-token
agreement of the distilled student (torch) and of the engine with the teacher (the teacher run once
more on the evaluation data here, where it can be asked)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.backends import registry as backends
from edgekd.common.artefacts import (
    ENGINE_JSON,
    STUDENT_INT8,
    STUDENT_JSON,
    STUDENT_ONNX,
    STUDENT_WEIGHTS,
    TEACHER_JSON,
    TEACHER_WEIGHTS,
    optional,
)
from edgekd.pipeline import evaluation
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.evaluation import AGREEMENT, TeacherTop1
from edgekd.pipeline.stage import Files, Outcome, Stage
from edgekd.stages.common import data_key, torch_where

# teacher kinds that cannot be asked about the evaluation data, and why
NO_TEST_LOGITS = {
    "logits": "the teacher is logits files: soft labels for the training data only, none for the evaluation data",
    "api": "the teacher is an API's responses (JSONL): its text and top-k log-probabilities for its own prompts, "
           "not next-token logits on the evaluation data",
}


def why_no_teacher(ctx: EngineContext) -> str | None:
    """Why the teacher cannot give top-1 next tokens on the evaluation data, or None when it can."""
    if not ctx.distills:
        return "edgekd compile: a trained model without a teacher"
    cfg = ctx.project.teacher  # type: ignore[attr-defined]
    kinds = [m.kind for m in cfg.members] if cfg.kind == "ensemble" else [cfg.kind]
    return next((NO_TEST_LOGITS[k] for k in kinds if k in NO_TEST_LOGITS), None)


def teacher_top1(ctx: Any, inputs: Files) -> TeacherTop1:
    """The teacher's top-1 at the positions the task scores on the evaluation data, or why not."""
    from edgekd.distill.sources import teacher_source
    from edgekd.distill.teachers import TorchTeacher, predict

    why = why_no_teacher(ctx)
    if why is not None:
        return TeacherTop1(None, f"no teacher to compare with: {why}")
    if ctx.teacher_eval_arrays is not ctx.eval_feeds.arrays:
        return TeacherTop1(None, "the teacher reads its own view of the evaluation data (cross-input): its positions are not the student's")
    source = teacher_source(ctx, inputs.get(TEACHER_WEIGHTS))
    where = torch_where() if isinstance(source, TorchTeacher) else "run through its runtime"
    logits = predict(source, ctx.teacher_eval_arrays)
    vocab = getattr(ctx.task, "vocab_size", None)
    if vocab is not None and logits.shape[-1] != vocab:
        return TeacherTop1(None, f"the teacher's vocabulary ({logits.shape[-1]} tokens) is not the student's ({vocab}): "
                           "their top-1 token ids do not name the same tokens")
    top1 = evaluation.scored_top1(ctx.task, ctx.eval_feeds, logits)
    return TeacherTop1(top1, f"{source.describe()}, {where}, run on the evaluation data in the evaluate stage")


def student_agreement(ctx: Any, inputs: Files, teacher: TeacherTop1) -> dict[str, Any]:
    """student.next_token_agreement_pct: the distilled student (torch) against the teacher."""
    from edgekd.distill.weights import load_weights
    from edgekd.pipeline.results import Metric
    from edgekd.stages.common import build_student

    key = f"student.{AGREEMENT}"
    if teacher.top1 is None:
        return {key: Metric(None, "%", "not available", teacher.how)}
    if STUDENT_WEIGHTS not in inputs or STUDENT_JSON not in inputs:
        return {key: Metric(None, "%", "not available", "no distilled student weights in this build")}
    student, _ = build_student(ctx, inputs[STUDENT_JSON])
    load_weights(student, inputs[STUDENT_WEIGHTS], "student")
    outputs = ctx.task.predict(student, ctx.eval_feeds.arrays)
    return {key: evaluation.next_token_agreement(ctx.task, ctx.eval_feeds, outputs, teacher, "the distilled student (torch)",
                                                 torch_where())}


def run_evaluate(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    if not evaluation.scores_next_tokens(ctx.task):
        return backends.get(ctx.target.runtime).evaluate(ctx, inputs)
    teacher = teacher_top1(ctx, inputs)
    ctx.teacher_top1 = teacher  # the backend's evaluation reports engine.next_token_agreement_pct against it
    try:
        outcome = backends.get(ctx.target.runtime).evaluate(ctx, inputs)
    finally:
        ctx.teacher_top1 = None
    outcome.metrics.update(student_agreement(ctx, inputs, teacher))
    return outcome


def evaluate_key(ctx: EngineContext) -> dict[str, Any]:
    teacher = {"teacher": ctx.project.teacher.model_dump()} if ctx.distills else {}  # type: ignore[attr-defined]
    return {"target": ctx.target.model_dump(), **data_key(ctx), **teacher}


EVALUATE = Stage("evaluate", "accuracy of the engine on the held-out evaluation data (causal LMs: next-token agreement with the teacher)",
                 (ENGINE_JSON, STUDENT_INT8, STUDENT_ONNX, optional(TEACHER_JSON), optional(TEACHER_WEIGHTS),
                  optional(STUDENT_JSON), optional(STUDENT_WEIGHTS)), (), ("onnxruntime", "onnxruntime-qnn", "torch"),
                 evaluate_key, run_evaluate)
