"""The loss registry: a loss is a registered DistillLoss, combined with others by weight.

A project names its loss terms in config; `build_loss(name, params)` makes one term and
`CombinedLoss([(weight, term), ...])` sums them. Feature-based terms name the layers they need
(`student_layers()` / `teacher_layers()`); the trainer captures those with
`edgekd.distill.features.FeatureCapture` and hands them over in `LossInputs`.

How a trainer uses this (the order matters because of learned projectors, e.g. FitNet's):

1. `loss = CombinedLoss([(w, build_loss(name, params, key=...)), ...])`
2. if `loss.needs_teacher_logits()` and the run has no teacher logits, or `loss.teacher_layers()`
   is not empty and the teacher is a black box: a ConfigError, before training.
3. open `FeatureCapture(student, loss.student_layers())` and `FeatureCapture(teacher,
   loss.teacher_layers())` (ConfigError here names a layer that does not exist).
4. one dry forward of one batch through student and teacher (`torch.no_grad()`, `eval()` so no
   BatchNorm statistics move), then `loss.setup(student_capture.features,
   teacher_capture.features)`: this creates the projectors, on the features' device and dtype.
5. only then build the optimizer over `student.parameters()` and `loss.parameters()`.
6. each step: student forward (with grad), teacher forward under `torch.no_grad()`, then
   `total, parts = loss(LossInputs(...))`; `total.backward()`.

Teacher tensors are used as given; the trainer computes them under `torch.no_grad()`.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, TypeVar

import torch
from pydantic import ValidationError
from torch import nn

from edgekd.config.strict import Strict
from edgekd.errors import ConfigError


@dataclass
class LossInputs:
    student_logits: torch.Tensor                     # [B, C]
    teacher_logits: torch.Tensor | None              # [B, C]; None when the run has no teacher logits
    labels: torch.Tensor                             # [B] int64
    student_features: dict[str, torch.Tensor]        # module path -> activation (FeatureCapture)
    teacher_features: dict[str, torch.Tensor]
    epoch: float = 0.0                               # training progress in epochs (1.5: half-way through the second)
    attention_mask: torch.Tensor | None = None       # [B, T] of the batch (1: token, 0: padding); None when it has none


class NoParams(Strict):
    """A loss without parameters: any key given is rejected."""


class DistillLoss(nn.Module):
    """One loss term. Subclasses set `name` and `Params` (a Strict pydantic model: its fields are
    the config params); they may own parameters (e.g. FitNet's projector), which the trainer
    optimizes with the student. Construct with keyword params: `KD(temperature=2.0)`."""

    name: ClassVar[str]
    Params: ClassVar[type[Strict]] = NoParams

    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.cfg = self.Params(**params)
        self.key = f"loss '{self.name}'"  # how errors name this term; build_loss adds the config key

    def student_layers(self) -> list[str]:
        """Module paths of the student whose outputs this loss needs."""
        return []

    def teacher_layers(self) -> list[str]:
        return []

    def needs_teacher_logits(self) -> bool:
        return False

    def setup(self, student_features: Mapping[str, torch.Tensor], teacher_features: Mapping[str, torch.Tensor]) -> None:
        """Called once with one batch's features before the optimizer is built; creates any
        parameters whose shapes depend on the features. Idempotent."""

    def forward(self, inputs: LossInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.cfg.model_dump().items())

    # helpers for subclasses: a missing input is a trainer bug, not a user error
    def _teacher_logits(self, inputs: LossInputs) -> torch.Tensor:
        if inputs.teacher_logits is None:
            raise ValueError(f"{self.key} needs teacher logits and got none; check needs_teacher_logits() before training")
        return inputs.teacher_logits

    def _feature(self, features: Mapping[str, torch.Tensor], layer: str, side: str) -> torch.Tensor:
        if layer not in features:
            raise ValueError(f"{self.key}: {side} feature '{layer}' was not captured; "
                             f"capture {side}_layers() with FeatureCapture (have: {sorted(features)})")
        return features[layer]


LOSSES: dict[str, type[DistillLoss]] = {}
L = TypeVar("L", bound=type[DistillLoss])


def register(cls: L) -> L:
    """Class decorator: adds a DistillLoss subclass to LOSSES under its `name`."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute `name` to register as a loss")
    if name in LOSSES:
        raise ValueError(f"loss name '{name}' is already registered by {LOSSES[name].__qualname__}")
    LOSSES[name] = cls
    return cls


def _params_help(cls: type[DistillLoss]) -> str:
    fields = cls.Params.model_fields
    if not fields:
        return f"'{cls.name}' takes no params"
    parts = [f"{n} (required)" if f.is_required() else f"{n} (default {f.default!r})" for n, f in fields.items()]
    return f"params of '{cls.name}': " + ", ".join(parts)


def build_loss(name: str, params: Mapping[str, Any] | None = None, *, key: str = "distill.losses") -> DistillLoss:
    """The registered loss `name` made with `params`; `key` is where the config names it (errors say it)."""
    if name not in LOSSES:
        near = difflib.get_close_matches(name, list(LOSSES), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(near)}?" if near else "use one of the known names"
        raise ConfigError(f"{key}: unknown loss '{name}' (known: {', '.join(sorted(LOSSES))})", hint)
    cls = LOSSES[name]
    try:
        loss = cls(**dict(params or {}))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            param = ".".join(str(p) for p in err["loc"]) or "(all)"
            parts.append(f"param '{param}': " + ("unknown param" if err["type"] == "extra_forbidden" else err["msg"]))
        raise ConfigError(f"{key}: loss '{name}' " + "; ".join(parts), _params_help(cls)) from None
    loss.key = f"{key}: loss '{name}'"
    return loss


class CombinedLoss(nn.Module):
    """sum(weight * term(inputs)). An nn.Module so `parameters()` includes the terms' projectors.
    forward returns (total, {term name: unweighted value, detached}); a name used by more than one
    term gets a suffix: 'fitnet', 'fitnet.2', ..."""

    def __init__(self, terms: list[tuple[float, DistillLoss]], *, key: str = "distill.losses") -> None:
        super().__init__()
        if not terms:
            raise ConfigError(f"{key}: no loss terms", "name at least one loss, e.g. 'hinton'")
        for weight, term in terms:
            if not (weight >= 0 and weight != float("inf")):
                raise ConfigError(f"{key}: loss '{term.name}' weight {weight} must be finite and >= 0", "give a weight such as 1.0")
        self.weights = [float(w) for w, _ in terms]
        self.terms = nn.ModuleList(t for _, t in terms)
        names = [t.name for t in self.terms]
        self.labels = [n if names[:i].count(n) == 0 else f"{n}.{names[:i].count(n) + 1}" for i, n in enumerate(names)]

    def student_layers(self) -> list[str]:
        return list(dict.fromkeys(layer for t in self.terms for layer in t.student_layers()))

    def teacher_layers(self) -> list[str]:
        return list(dict.fromkeys(layer for t in self.terms for layer in t.teacher_layers()))

    def needs_teacher_logits(self) -> bool:
        return any(t.needs_teacher_logits() for t in self.terms)

    def setup(self, student_features: Mapping[str, torch.Tensor], teacher_features: Mapping[str, torch.Tensor]) -> None:
        for term in self.terms:
            term.setup(student_features, teacher_features)

    def forward(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = [term(inputs) for term in self.terms]
        total = torch.stack([weight * value for weight, value in zip(self.weights, values)]).sum()
        return total, {label: value.detach() for label, value in zip(self.labels, values)}


# ---- logit losses -----------------------------------------------------------------------------
