"""Streaming task metrics: exact to computing them on all batches at once (counts and float64 sums,
never a mean of means)."""
from __future__ import annotations

import math
from collections.abc import Callable

from edgekd.common.lazy import LazyModule
from edgekd.tasks.base import LABELS, Batch, MetricState
from edgekd.tasks.specs import ACCURACY, PERPLEXITY  # noqa: F401  (re-exported)

torch = LazyModule("torch")  # imported on first use: a cached rebuild makes tasks without loading torch
F = LazyModule("torch.nn.functional")
MAX_LOG_FLOAT = math.log(1.7976931348623157e308)  # exp() of more overflows float64

RowsAndTargets = Callable[["torch.Tensor", Batch], "tuple[torch.Tensor, torch.Tensor]"]


class AccuracyState(MetricState):
    """Top-1 accuracy in percent of logits [B, C] against batch["labels"] [B]; batches without
    labels are skipped."""

    def __init__(self) -> None:
        self.correct = 0
        self.seen = 0

    def update(self, logits: torch.Tensor, batch: Batch) -> None:
        if LABELS not in batch:
            return
        labels = torch.as_tensor(batch[LABELS]).to(logits.device).reshape(-1)
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"accuracy needs logits [B, C] and labels [B]; got {list(logits.shape)} and {list(labels.shape)}")
        self.correct += int((logits.detach().argmax(dim=-1) == labels).sum())
        self.seen += int(labels.shape[0])

    def value(self) -> float | None:
        return 100.0 * self.correct / self.seen if self.seen else None

    @property
    def count(self) -> int:
        return self.seen


class PerplexityState(MetricState):
    """exp(mean token negative log-likelihood) over the rows `rows_and_targets(logits, batch)`
    selects (for causal-lm: the positions that predict a real next token, as its kd_view)."""

    def __init__(self, rows_and_targets: RowsAndTargets) -> None:
        self.rows_and_targets = rows_and_targets
        self.nll_sum = 0.0
        self.tokens = 0

    def update(self, logits: torch.Tensor, batch: Batch) -> None:
        rows, targets = self.rows_and_targets(logits.detach(), batch)
        if rows.shape[0]:
            self.nll_sum += float(F.cross_entropy(rows.double(), targets, reduction="sum"))
            self.tokens += int(rows.shape[0])

    def value(self) -> float | None:
        """exp(mean NLL); infinite where a scored token had (next to) no probability (a mean NLL past
        float64's exp range)."""
        if not self.tokens:
            return None
        mean = self.nll_sum / self.tokens
        return math.exp(mean) if mean < MAX_LOG_FLOAT else math.inf

    @property
    def count(self) -> int:
        return self.tokens
