"""What image and text classification share: logits [B, C] against labels [B], cross-entropy
(mixed with mixup's second targets when the batch has them), top-1 accuracy, the logits as the KD view."""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping

import numpy as np

from edgekd.common.lazy import LazyModule
from edgekd.errors import DataError
from edgekd.tasks.base import BATCH_AXIS, LABELS, Batch, MetricState, Task, TensorSpec
from edgekd.tasks.metrics import ACCURACY, AccuracyState

torch = LazyModule("torch")  # imported on first use: a cached rebuild makes tasks without loading torch
F = LazyModule("torch.nn.functional")

LOGITS = "logits"
LABELS_MIX = "labels_mix"  # what edgekd.data.augment's mixup adds: the second targets, weighted 1 - lambda,
MIX_LAMBDA = "mix_lambda"  # and lambda, the weight of "labels" (0-d: one per batch; [B]: one per sample)


def batch_labels(batch: Batch, task: str) -> torch.Tensor:
    """batch["labels"] as int64 [B]; a DataError when the batch has none."""
    if LABELS not in batch:
        raise DataError(f"task '{task}': the batch has no '{LABELS}'", "the data source must yield labels to train on")
    return torch.as_tensor(batch[LABELS]).to(torch.int64).reshape(-1)


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, labels_mix: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """mean over samples of lam·CE(labels) + (1 − lam)·CE(labels_mix); `lam` is one weight (0-d) or
    one per sample ([B]). With one lam it equals lam·CE(labels) + (1 − lam)·CE(labels_mix), the means."""
    lam = lam.to(logits.dtype)
    first = F.cross_entropy(logits, labels, reduction="none")
    second = F.cross_entropy(logits, labels_mix, reduction="none")
    return (lam * first + (1 - lam) * second).mean()


class ClassificationTask(Task):
    """One label per sample."""

    metric = ACCURACY
    optimum_task = ""  # set by each subclass

    @property
    @abstractmethod
    def classes(self) -> int:
        """How many classes the logits score."""

    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(LOGITS, "float32", (BATCH_AXIS, self.classes)),)

    def dummy_labels(self, inputs: Mapping[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        rows = next(iter(inputs.values())).shape[0]
        return rng.integers(0, self.classes, size=rows).astype(np.int64)

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Cross-entropy, mean over the batch; a mixed batch (mixup: "labels_mix", "mix_lambda") scores
        lam·CE(labels) + (1 − lam)·CE(labels_mix) (`mixed_cross_entropy`)."""
        view, labels = self.kd_view(logits, batch), self.kd_labels(batch).to(logits.device)
        if LABELS_MIX not in batch:
            return F.cross_entropy(view, labels)
        if MIX_LAMBDA not in batch:
            raise DataError(f"task '{self.name}': the batch has '{LABELS_MIX}' but no '{MIX_LAMBDA}'", "let mixup add both")
        return mixed_cross_entropy(view, labels, batch_labels({LABELS: batch[LABELS_MIX]}, self.name).to(logits.device),
                                   torch.as_tensor(batch[MIX_LAMBDA]).to(logits.device))

    def kd_view(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The logits themselves, [B, C]."""
        if logits.dim() != 2:
            raise ValueError(f"task '{self.name}': expected logits [B, C], got {list(logits.shape)}")
        return logits

    def kd_labels(self, batch: Batch) -> torch.Tensor:
        return batch_labels(batch, self.name)

    def metric_state(self) -> MetricState:
        return AccuracyState()
