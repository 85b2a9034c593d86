"""What can be wrong with a project's data before anything trains on it: NaN or Inf in a split's
inputs (an error: a model trained on them learns nothing, and the failure shows up later as a
teacher that does not converge) and degenerate labels (a warning: one class only, or a class of
the task that no sample of the train split has)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekd.data.sources import INDEX, LABELS, SPLITS, DataSource
from edgekd.errors import DataError

AUDIT_BATCH = 1024


@dataclass
class SplitAudit:
    samples: int = 0
    non_finite: dict[str, int] = field(default_factory=dict)  # input name -> NaN/Inf values
    first_bad: dict[str, int] = field(default_factory=dict)  # input name -> index of the first sample with one
    labels: dict[int, int] = field(default_factory=dict)  # label -> samples

    def update(self, batch: dict[str, np.ndarray]) -> None:
        for name, array in batch.items():
            if name in (INDEX, LABELS) or not np.issubdtype(array.dtype, np.floating):
                continue
            finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if not finite.all():
                self.non_finite[name] = self.non_finite.get(name, 0) + int(np.size(array) - np.isfinite(array).sum())
                self.first_bad.setdefault(name, int(batch[INDEX][int(np.argmin(finite))]))
        labels = batch.get(LABELS)
        if labels is not None and np.issubdtype(labels.dtype, np.integer) and labels.ndim == 1:
            values, counts = np.unique(labels, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist()):
                self.labels[value] = self.labels.get(value, 0) + count
        self.samples += len(batch[INDEX])


def audit(source: DataSource) -> dict[str, SplitAudit]:
    """Stream every split once, in natural order."""
    result = {}
    for split in SPLITS:
        state = SplitAudit()
        for batch in source.batches(split, AUDIT_BATCH):
            state.update(batch)
        result[split] = state
    return result


def check(source: DataSource, classes: int | None, where: str) -> list[str]:
    """Raise DataError for non-finite inputs or an empty split; return warnings about the labels
    (`classes`: the task's number of classes, None for tasks without class labels)."""
    audits = audit(source)
    for split, state in audits.items():
        if state.samples == 0:
            raise DataError(f"{where}: split '{split}' of {source.describe()} is empty", "every split (train, calib, test) needs samples")
        for name, count in state.non_finite.items():
            raise DataError(f"{where}: split '{split}' input '{name}' has {count} NaN or Inf values (first in sample {state.first_bad[name]})",
                            "clean or impute the data before building: nothing can learn from NaN/Inf inputs")
        bad = [label for label in state.labels if classes is not None and not 0 <= label < classes]
        if bad:
            raise DataError(f"{where}: split '{split}' has labels {sorted(bad)[:5]} outside 0..{classes - 1} (the task has {classes} classes)",
                            "labels must be class indices 0..classes-1; set [task] args num_classes if the data factory's count is wrong")
    train = audits["train"].labels
    warnings = []
    if train and len(train) == 1:
        warnings.append(f"{where}: every train sample has label {next(iter(train))}: a model learns nothing from one class")
    elif train and classes is not None and len(train) < classes:
        missing = sorted(set(range(classes)) - set(train))
        warnings.append(f"{where}: the train split has no sample of class(es) {missing[:10]} of the task's {classes}")
    return warnings
