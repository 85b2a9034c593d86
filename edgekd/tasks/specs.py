"""The names and specs a task is described by (no torch here: budgets, reports and the gate read
them): tensor specs with named dynamic axes, the metric and its direction, the latency scenarios."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.graph.export import MAX_BATCH  # noqa: F401  (re-exported: the largest batch a dynamic batch axis admits)
from edgekd.graph.inputs import ROLES

LABELS = "labels"
INDEX = "index"

# dynamic axis names, as optimum-onnx names them (so both exporters give the same dim_params)
BATCH_AXIS = "batch_size"
SEQUENCE_AXIS = "sequence_length"

# latency scenarios (MLPerf names for the first two)
SINGLE_STREAM = "SingleStream"                      # batch-1 latency
OFFLINE = "Offline"                                 # throughput at the best batch
TIME_TO_FIRST_TOKEN = "TimeToFirstToken"            # decoders: the prompt's forward pass
DECODE_TOKENS_PER_SECOND = "DecodeTokensPerSecond"  # decoders: one token at a time after the prompt

# inputs a batch must carry; any other role has a default (see `default_input`)
REQUIRED_ROLES = ("token_ids", "image", "float")


@dataclass(frozen=True)
class TensorSpec:
    """One named model input or output: `shape` holds an int for a fixed axis and the axis name for
    a dynamic one (`BATCH_AXIS`, `SEQUENCE_AXIS`, ...); `role` is one of edgekd.graph.inputs.ROLES
    for inputs ("" for outputs)."""

    name: str
    dtype: str  # numpy dtype name: float32, int64, ...
    shape: tuple[int | str, ...]
    role: str = ""

    def __post_init__(self) -> None:
        if self.role and self.role not in ROLES:
            raise ValueError(f"tensor '{self.name}': role '{self.role}' is not one of {', '.join(ROLES)}")
        np.dtype(self.dtype)  # a dtype numpy does not know is a bug in the task

    @property
    def axes(self) -> dict[int, str]:
        """The dynamic axes: {0: "batch_size", 1: "sequence_length"}."""
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class MetricSpec:
    """A task metric and its direction. A change for budgets is named and computed from it: a
    metric in percent changes in points (`accuracy_drop_pt`), any other in percent of the value
    before (`perplexity_increase_pct`); the change is positive when the metric got worse."""

    name: str
    unit: str  # "%" or "" (a plain number such as a perplexity)
    higher_is_better: bool

    @property
    def degradation_name(self) -> str:
        """How budgets name a change for the worse: accuracy_drop_pt, perplexity_increase_pct."""
        word = "drop" if self.higher_is_better else "increase"
        return f"{self.name}_{word}_{'pt' if self.unit == '%' else 'pct'}"

    def degradation(self, before: float, after: float) -> float:
        """How much worse `after` is than `before`, in the unit `degradation_name` says
        (negative: it got better)."""
        worse = before - after if self.higher_is_better else after - before
        if self.unit == "%":
            return worse
        if before == 0:
            raise ValueError(f"{self.degradation_name}: a relative change from {self.name} 0 is undefined")
        return 100.0 * worse / abs(before)

    def better(self, a: float, b: float) -> bool:
        """Whether value `a` is strictly better than value `b`."""
        return a > b if self.higher_is_better else a < b


ACCURACY = MetricSpec("accuracy", "%", higher_is_better=True)  # top-1, percent of samples
PERPLEXITY = MetricSpec("perplexity", "", higher_is_better=False)  # exp(mean next-token NLL)
METRICS = {m.name: m for m in (ACCURACY, PERPLEXITY)}
