"""The quality of a graph or engine on the build's evaluation data, as the quantize stage and every
backend's evaluate report it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.backends.ort import session as ortb
from edgekd.pipeline import evaluation
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import Metric


def quality_metrics(ctx: EngineContext, prefix: str, outputs: np.ndarray, fp32: Path, where: str) -> dict[str, Metric]:
    """`prefix`.<the task's metric> on the evaluation data; without labels also `prefix`.agreement_pct,
    the top-1 agreement with the fp32 graph (a fidelity check, said so)."""
    feeds = ctx.eval_feeds
    metrics = {f"{prefix}.{ctx.metric.name}": evaluation.quality_metric(ctx.metric, feeds, outputs, where, ctx.task)}
    if feeds.labels is None:
        reference = ortb.predict_file(fp32, feeds.arrays)
        what = "the INT8 graph" if prefix == "int8" else f"the {prefix}"
        metrics[f"{prefix}.agreement_pct"] = evaluation.agreement_metric(feeds, outputs, reference, what, where)
    metrics.update(evaluation.teacher_agreement(ctx, prefix, outputs, where))  # causal-lm: next-token agreement with the teacher
    return metrics
