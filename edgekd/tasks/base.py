"""The Task seam: what a batch is, how a model consumes it, the loss, the view the KD losses see,
the metric and its direction, the export contract and the latency scenarios of one kind of model.

After optimum-onnx's OnnxConfig (inputs and outputs with named dynamic axes, dummy inputs made
from them) and Olive's metrics (`higher_is_better`, so budgets follow the direction).

A Task is an instance configured with the dims that come from the data and the model (image
shape, number of classes, vocabulary size, longest sequence); its name and metric are class-level.
Tasks register by name in `edgekd.tasks.registry`.
"""
from __future__ import annotations

import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekd.common.lazy import LazyModule
from edgekd.errors import ConfigError, DataError
from edgekd.graph.feedgen import make_feeds
from edgekd.graph.inputs import ModelInputs, ResolvedInput
from edgekd.tasks.specs import (  # noqa: F401  (re-exported: the seam's names)
    BATCH_AXIS,
    DECODE_TOKENS_PER_SECOND,
    INDEX,
    LABELS,
    MAX_BATCH,
    OFFLINE,
    REQUIRED_ROLES,
    SEQUENCE_AXIS,
    SINGLE_STREAM,
    TIME_TO_FIRST_TOKEN,
    MetricSpec,
    TensorSpec,
)

torch = LazyModule("torch")  # imported on first use: a cached rebuild makes tasks without loading torch

Batch = Mapping[str, "np.ndarray | torch.Tensor"]
"""Named model inputs plus "labels" and optionally "index" (the samples' positions in their split).
Keys that are not model inputs are ignored by `Task.forward`."""


class MetricState(ABC):
    """A streaming metric: `update()` per batch, `value()` at the end, exact to computing it on
    all batches at once. `value()` is None while nothing with labels was seen."""

    @abstractmethod
    def update(self, logits: torch.Tensor, batch: Batch) -> None: ...

    @abstractmethod
    def value(self) -> float | None: ...

    @property
    @abstractmethod
    def count(self) -> int:
        """How many items (samples or tokens) the value is over."""


def check_dim(task: str, key: str, value: object, minimum: int) -> None:
    """A ConfigError unless a task's dim `value` is an integer >= minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"task '{task}': {key} must be an integer >= {minimum}, got {value!r}")


def is_hf_model(model: object) -> bool:
    """Whether `model` is a transformers PreTrainedModel (without importing transformers)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def as_tensor(value: np.ndarray | torch.Tensor, dtype: str) -> torch.Tensor:
    """A batch value as a tensor of the spec's dtype."""
    return torch.as_tensor(value).to(getattr(torch, np.dtype(dtype).name))


def default_input(spec: TensorSpec, given: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The value of an input a batch left out: attention masks of ones, token types of zeros,
    positions counted along the mask (as transformers' generate does); shaped like the token ids."""
    ids = given.get("input_ids", next(iter(given.values()), None))
    if spec.role in REQUIRED_ROLES or ids is None:
        raise DataError(f"the batch has no '{spec.name}'", "the data source must yield every required model input")
    dtype = getattr(torch, spec.dtype)
    if spec.role == "attention_mask":
        return torch.ones(ids.shape, dtype=dtype, device=ids.device)
    if spec.role == "position_ids":
        mask = given.get("attention_mask", torch.ones_like(ids))
        return (mask.to(torch.int64).cumsum(-1) - 1).clamp(min=0).to(dtype)
    return torch.zeros(ids.shape, dtype=dtype, device=ids.device)


class Task(ABC):
    """One kind of model. Subclasses are frozen dataclasses of their dims and register with
    `edgekd.tasks.registry.register_task`, which sets `name`."""

    name: ClassVar[str]
    metric: ClassVar[MetricSpec]
    optimum_task: ClassVar[str]  # the task optimum-onnx exports a Hugging Face model for

    @classmethod
    def dims_from_data(cls, spec: Any) -> dict[str, Any]:
        """This task's constructor dims from what a data source knows about its data
        (edgekd.data.sources.SourceSpec: inputs with names and per-sample shapes, num_classes,
        vocab_size); a project's [task] args override them."""
        raise NotImplementedError(f"task {cls.name} does not read its dims from data")

    # ---- the contract ------------------------------------------------------------------------

    @abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model inputs, in the order a plain module takes them positionally."""

    @abstractmethod
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def axis_sizes(self) -> dict[str, int]:
        """Default (and largest) size of each named non-batch axis: {"sequence_length": 128}."""
        return {}

    def vocab_size_of(self, spec: TensorSpec) -> int | None:
        """Token-id inputs: values are drawn below this."""
        return None

    def latency_scenarios(self) -> tuple[str, ...]:
        return (SINGLE_STREAM, OFFLINE)

    # ---- inputs ------------------------------------------------------------------------------

    def model_inputs(self, batch: int = 1, **dims: int) -> ModelInputs:
        """The inputs with every dim a number: `batch` rows, named axes from `dims` (e.g.
        `sequence_length=16`) or the task's defaults; for feeds, bench, tuning and engines."""
        sizes = self.axis_sizes()
        unknown = sorted(set(dims) - set(sizes))
        if unknown:
            raise ConfigError(f"task '{self.name}': unknown dims {', '.join(unknown)}",
                              f"this task's named dims: {', '.join(sorted(sizes)) or 'none (only the batch)'}")
        if batch < 1 or any(v < 1 for v in dims.values()):
            raise ConfigError(f"task '{self.name}': batch and dims must be >= 1 (got batch={batch}, {dims})")
        longer = [f"{d}={v} > {sizes[d]}" for d, v in dims.items() if v > sizes[d]]
        if longer:
            raise ConfigError(f"task '{self.name}': {', '.join(longer)}", "the task's dims bound its axes; raise them there")
        resolved = []
        for spec in self.inputs():
            shape = tuple(batch if d == BATCH_AXIS else dims.get(d, sizes[d]) if isinstance(d, str) else d
                          for d in spec.shape)
            sources = tuple("batch" if d == BATCH_AXIS else f"{d} given" if d in dims
                            else f"task {self.name} default {d}" if isinstance(d, str) else f"task {self.name}"
                            for d in spec.shape)
            batch_axis = spec.shape.index(BATCH_AXIS) if BATCH_AXIS in spec.shape else None
            resolved.append(ResolvedInput(spec.name, spec.dtype, shape, spec.role, sources,
                                          batch_axis, self.vocab_size_of(spec)))
        return ModelInputs(tuple(resolved), (f"from task '{self.name}'",))

    def dummy_inputs(self, batch: int = 1, seed: int = 0, **dims: int) -> dict[str, np.ndarray]:
        """Model inputs as a request sends them (token ids inside the vocabulary, masks of ones,
        images standard-normal), seeded; for export, search, tuning and bench."""
        return make_feeds([i.to_json() for i in self.model_inputs(batch, **dims).inputs], seed=seed)

    def dummy_batch(self, batch: int = 2, seed: int = 0, **dims: int) -> dict[str, np.ndarray]:
        """`dummy_inputs` plus valid labels: what a data source yields."""
        inputs = self.dummy_inputs(batch, seed, **dims)
        return {**inputs, LABELS: self.dummy_labels(inputs, np.random.default_rng(seed + 1))}

    @abstractmethod
    def dummy_labels(self, inputs: Mapping[str, np.ndarray], rng: np.random.Generator) -> np.ndarray: ...

    def feed(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The batch's model inputs as tensors of the specs' dtypes, in spec order; inputs it leaves
        out get their default (`default_input`); other keys (labels, index, ...) are dropped."""
        feeds: dict[str, torch.Tensor] = {}
        for spec in self.inputs():
            feeds[spec.name] = as_tensor(batch[spec.name], spec.dtype) if spec.name in batch else default_input(spec, feeds)
        return feeds

    # ---- the model ---------------------------------------------------------------------------

    def forward(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The model's logits on `batch`. A transformers PreTrainedModel gets the inputs its forward
        takes as keywords (no cache) and gives `.logits`; a plain module gets the inputs
        positionally in spec order and returns the logits."""
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        feeds = {n: t.to(device) for n, t in self.feed(batch).items()}
        if not is_hf_model(model):
            out = model(*feeds.values())
            return out.logits if hasattr(out, "logits") else out
        accepted = inspect.signature(model.forward).parameters
        missing = [s.name for s in self.inputs() if s.role in REQUIRED_ROLES and s.name not in accepted]
        if missing:
            raise ConfigError(f"task '{self.name}': {type(model).__name__}.forward takes no {', '.join(missing)}",
                              f"configure the task with the model's own input names (it takes {', '.join(accepted)})")
        kwargs: dict[str, Any] = {n: t for n, t in feeds.items() if n in accepted}
        if "use_cache" in accepted:
            kwargs["use_cache"] = False
        return model(**kwargs).logits

    def predict(self, model: torch.nn.Module, arrays: Batch, batch_size: int = 256) -> np.ndarray:
        """The model's logits on named arrays (eval mode), in chunks of `batch_size` rows, as numpy."""
        model.eval()
        rows = len(next(iter(arrays.values())))
        with torch.no_grad():
            outs = [self.forward(model, {n: a[i:i + batch_size] for n, a in arrays.items()}).float().cpu().numpy()
                    for i in range(0, rows, batch_size)]
        return np.concatenate(outs)

    @abstractmethod
    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The loss on the labels alone (a scalar, mean over the items)."""

    @abstractmethod
    def kd_view(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The logits as the KD losses see them: [N, V], one row per item, the same rows for the
        teacher and the student on the same batch."""

    @abstractmethod
    def kd_labels(self, batch: Batch) -> torch.Tensor:
        """The labels of `kd_view`'s rows: [N] int64."""

    @abstractmethod
    def metric_state(self) -> MetricState: ...

    def export(self, model: torch.nn.Module, path: Path, opset: int) -> None:
        """Write `model` as ONNX at `path` with the specs' names and dynamic axes: a plain module
        with torch.onnx (torch.export-based), a Hugging Face model with optimum-onnx."""
        from edgekd.tasks import export as exporters

        training = model.training
        try:
            if is_hf_model(model):
                exporters.export_hf(model, self, Path(path), opset)
            else:
                exporters.export_module(model, self, Path(path), opset)
        finally:
            model.train(training)
