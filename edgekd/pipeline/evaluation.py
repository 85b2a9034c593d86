"""How good a model's outputs are on named-input data: top-1 accuracy where labels are known, and,
where they are not, top-1 agreement with a reference model (the fp32 graph): a fidelity check of
quantization, said plainly not to be accuracy. Outputs are logits with the classes on the last
axis: [N, C] (one label per sample) or [N, T, V] (one per token)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.graph.feeds import FeedSet
from edgekd.pipeline.results import Metric
from edgekd.tasks.specs import ACCURACY, MetricSpec

CHUNK = 256  # samples per metric update


def top1_pt(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Share of positions (samples, or tokens) whose argmax is the label, in points."""
    predicted = np.asarray(outputs).argmax(axis=-1)
    if predicted.shape != labels.shape:
        raise ValueError(f"outputs of shape {np.shape(outputs)} do not fit labels of shape {labels.shape}")
    return float((predicted == labels).mean() * 100.0)


def agreement_pt(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Share of positions whose argmax equals the reference's, in points."""
    return float((np.asarray(outputs).argmax(axis=-1) == np.asarray(reference).argmax(axis=-1)).mean() * 100.0)


def _label_distribution(reference: np.ndarray) -> np.ndarray:
    """The reference's class probabilities: its outputs where they already are (non-negative, summing
    to 1 on the last axis), else their softmax (logits)."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.min() >= 0 and np.allclose(ref.sum(axis=-1), 1.0, atol=1e-3):
        return ref
    z = np.exp(ref - ref.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def expected_top1_pt(outputs: np.ndarray, reference: np.ndarray) -> float:
    """The top-1 accuracy (points) `outputs` would score if every position's label were drawn from the
    reference's predicted distribution: the mean of p_reference(argmax outputs). For the reference
    itself it is its mean top probability. Unlike top-1 agreement, a flip between two near-tied
    classes costs what it would cost in expectation (little), and one between a confident top class
    and another costs nearly a full miss: without labels it is the expected accuracy drop, at any
    number of samples, not one sample in N."""
    probs = _label_distribution(reference)
    chosen = np.asarray(outputs).argmax(axis=-1)
    return float(np.take_along_axis(probs, chosen[..., None], axis=-1).mean() * 100.0)


def accuracy_metric(feeds: FeedSet, outputs: np.ndarray, where: str) -> Metric:
    """Top-1 accuracy on `feeds` (its labels), or "not available" when it has none."""
    if feeds.labels is None:
        return Metric(None, "%", "not available", f"no labels for {feeds.description}: give labelled data "
                      "(edgekd compile --data DIR with labels.npy, or --project) to measure accuracy")
    return Metric(top1_pt(outputs, feeds.labels), "%", "measured", f"top-1 on {feeds.description}, {where}")


def agreement_metric(feeds: FeedSet, outputs: np.ndarray, reference: np.ndarray, what: str, where: str) -> Metric:
    fit = "" if feeds.fit_for_accuracy else " (generated inputs, not data: a fidelity check, not accuracy)"
    return Metric(agreement_pt(outputs, reference), "%", "measured",
                  f"top-1 agreement of {what} with the fp32 model on {feeds.description}{fit}, {where}")


def quality_metric(metric: MetricSpec, feeds: FeedSet, outputs: np.ndarray, where: str, task: Any = None) -> Metric:
    """The task's metric of `outputs` on `feeds`: top-1 accuracy here (numpy); any other metric through
    the task's streaming metric state (edgekd.tasks), fed in chunks, exact to one pass over all."""
    if metric.name == ACCURACY.name:
        return accuracy_metric(feeds, outputs, where)
    if task is None:
        raise ValueError(f"{metric.name} needs the task that defines it")
    import torch

    state = task.metric_state()
    for start in range(0, len(outputs), CHUNK):
        batch = {name: array[start:start + CHUNK] for name, array in feeds.arrays.items()}
        if feeds.labels is not None:
            batch["labels"] = feeds.labels[start:start + CHUNK]
        state.update(torch.from_numpy(np.ascontiguousarray(outputs[start:start + CHUNK])), batch)
    value = state.value()
    if value is None:
        return Metric(None, metric.unit, "not available", f"no targets for {metric.name} in {feeds.description}")
    return Metric(value, metric.unit, "measured", f"{metric.name} over {state.count} targets of {feeds.description}, {where}")


# ------------------------------------------------ next-token agreement with the teacher (causal-lm)

AGREEMENT = "next_token_agreement_pct"  # metrics <model>.next_token_agreement_pct


@dataclass(frozen=True)
class TeacherTop1:
    """The teacher's top-1 next token at every scored position of the evaluation data (`top1`), and
    where it ran; or `top1` None and `how` saying why the teacher could not be asked."""

    top1: np.ndarray | None
    how: str


def scored_top1(task: Any, feeds: FeedSet, outputs: np.ndarray) -> np.ndarray:
    """The argmax of `outputs` [N, T, V] at the positions the task scores (task.rows_and_targets: for
    causal-lm those that predict a real next token), flattened in order, in chunks."""
    import torch

    picked = []
    for start in range(0, len(outputs), CHUNK):
        batch = {name: array[start:start + CHUNK] for name, array in feeds.arrays.items()}
        if feeds.labels is not None:
            batch["labels"] = feeds.labels[start:start + CHUNK]
        rows, _ = task.rows_and_targets(torch.from_numpy(np.ascontiguousarray(outputs[start:start + CHUNK])), batch)
        picked.append(rows.argmax(dim=-1).numpy())
    return np.concatenate(picked) if picked else np.zeros(0, np.int64)


def scores_next_tokens(task: Any) -> bool:
    """Whether next-token agreement is defined for `task` (it scores token positions: causal-lm)."""
    return task is not None and hasattr(task, "rows_and_targets")


def next_token_agreement(task: Any, feeds: FeedSet, outputs: np.ndarray, teacher: TeacherTop1, what: str, where: str) -> Metric:
    """Share of scored positions where `what`'s top-1 next token is the teacher's, in points; "not
    available" with the reason where the teacher's top-1 is not there or does not line up."""
    if teacher.top1 is None:
        return Metric(None, "%", "not available", teacher.how)
    mine = scored_top1(task, feeds, outputs)
    if mine.shape != teacher.top1.shape or not mine.size:
        return Metric(None, "%", "not available", f"the teacher scored {teacher.top1.size} positions and {what} {mine.size} "
                      "on the evaluation data: they do not line up (a teacher reading its own view or tokenizer)")
    return Metric(float((mine == teacher.top1).mean() * 100.0), "%", "measured",
                  f"top-1 next token of {what} equal to the teacher's at {mine.size} scored positions of {feeds.description}, "
                  f"{where}; teacher {teacher.how}")


def teacher_agreement(ctx: Any, prefix: str, outputs: np.ndarray, where: str) -> dict[str, Metric]:
    """`<prefix>.next_token_agreement_pct` where the build's task scores next tokens and the stage put
    the teacher's top-1 on the context (ctx.teacher_top1, set by the evaluate stage); else nothing."""
    teacher = getattr(ctx, "teacher_top1", None)
    if teacher is None or not scores_next_tokens(ctx.task):
        return {}
    what = "the INT8 graph" if prefix == "int8" else f"the {prefix}"
    return {f"{prefix}.{AGREEMENT}": next_token_agreement(ctx.task, ctx.eval_feeds, outputs, teacher, what, where)}
