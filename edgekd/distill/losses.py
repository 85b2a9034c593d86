"""Distillation losses, registered by name and combined with weights.

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
import torch.nn.functional as F
from pydantic import Field, ValidationError
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

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), mean over the batch (Hinton et al. 2015)."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. 2015: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones."""
    soft = kd_loss(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


@register
class CE(DistillLoss):
    """Cross-entropy of the student's logits on the hard labels."""

    name = "ce"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return F.cross_entropy(inputs.student_logits, inputs.labels)


class _TemperatureParams(Strict):
    temperature: float = Field(4.0, gt=0)


@register
class KD(DistillLoss):
    """Soft-target loss of Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural
    Network" (arXiv:1503.02531): T^2 * KL(softmax(t/T) || softmax(s/T)), mean over the batch."""

    name = "kd"
    Params = _TemperatureParams
    cfg: _TemperatureParams

    def needs_teacher_logits(self) -> bool:
        return True

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return kd_loss(inputs.student_logits, self._teacher_logits(inputs), self.cfg.temperature)


class _HintonParams(Strict):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)


@register
class Hinton(DistillLoss):
    """Hinton et al. 2015 (arXiv:1503.02531) as they train it: alpha * kd + (1 - alpha) * ce."""

    name = "hinton"
    Params = _HintonParams
    cfg: _HintonParams

    def needs_teacher_logits(self) -> bool:
        return True

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return hinton_kd(inputs.student_logits, self._teacher_logits(inputs), inputs.labels,
                         self.cfg.temperature, self.cfg.alpha)


# ---- feature losses ---------------------------------------------------------------------------

def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


class _FitNetParams(Strict):
    student_layer: str
    teacher_layer: str


@register
class FitNet(DistillLoss):
    """Hint loss of Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets"
    (arXiv:1412.6550): MSE(projector(student feature), teacher feature).

    The projector (the paper's regressor) is a 1x1 Conv2d for 4-D [B, C, H, W] features or a
    Linear for 2-D [B, C] ones, mapping student channels to teacher channels. Its shape depends on
    the features, so `setup()` creates it from one batch's features; the trainer must call setup
    before building the optimizer and optimize `parameters()` with the student. When the spatial
    sizes differ, the larger map is adaptive-average-pooled to the smaller size (per dimension)."""

    name = "fitnet"
    Params = _FitNetParams
    cfg: _FitNetParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.projector: nn.Module | None = None

    def student_layers(self) -> list[str]:
        return [self.cfg.student_layer]

    def teacher_layers(self) -> list[str]:
        return [self.cfg.teacher_layer]

    def setup(self, student_features: Mapping[str, torch.Tensor], teacher_features: Mapping[str, torch.Tensor]) -> None:
        if self.projector is not None:
            return
        s = self._feature(student_features, self.cfg.student_layer, "student")
        t = self._feature(teacher_features, self.cfg.teacher_layer, "teacher")
        if s.dim() != t.dim() or s.dim() not in (2, 4):
            raise ConfigError(
                f"{self.key}: student_layer '{self.cfg.student_layer}' gives {_shape(s)} and teacher_layer "
                f"'{self.cfg.teacher_layer}' gives {_shape(t)}; fitnet needs both [B, C] or both [B, C, H, W]",
                "name two layers whose outputs have the same rank")
        layer = nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1) if s.dim() == 4 else nn.Linear(s.shape[1], t.shape[1])
        self.projector = layer.to(device=s.device, dtype=s.dtype)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if self.projector is None:
            raise RuntimeError(f"{self.key}: call setup() with one batch's features before the first forward")
        s = self._feature(inputs.student_features, self.cfg.student_layer, "student")
        t = self._feature(inputs.teacher_features, self.cfg.teacher_layer, "teacher")
        if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
            size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
            s, t = F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size)
        return F.mse_loss(self.projector(s), t)


def _resized(q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return q if tuple(q.shape[-2:]) == size else F.interpolate(q, size=size, mode="bilinear", align_corners=False)


class _ATParams(Strict):
    pairs: list[tuple[str, str]] = Field(min_length=1, description="[[student_layer, teacher_layer], ...]")
    p: float = Field(2.0, gt=0)


@register
class AttentionTransfer(DistillLoss):
    """Activation-based attention transfer, Zagoruyko & Komodakis, ICLR 2017, "Paying More
    Attention to Attention" (arXiv:1612.03928): for each (student, teacher) layer pair,
    || Q_s / ||Q_s||_2 - Q_t / ||Q_t||_2 ||_2 with Q = mean over channels of |A|^p (p = 2),
    flattened per sample; mean over the batch, then over the pairs. This is the paper's formula;
    the authors' code uses the mean squared difference instead (scale the weight to match).

    Channel counts may differ (Q has none). When the spatial sizes differ, the smaller attention
    map is bilinearly interpolated to the larger size before normalization."""

    name = "at"
    Params = _ATParams
    cfg: _ATParams

    def student_layers(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.cfg.pairs))

    def teacher_layers(self) -> list[str]:
        return list(dict.fromkeys(t for _, t in self.cfg.pairs))

    def _attention(self, feature: torch.Tensor, layer: str) -> torch.Tensor:
        if feature.dim() != 4:
            raise ConfigError(f"{self.key}: param 'pairs': layer '{layer}' gives {_shape(feature)}, not [B, C, H, W]",
                              "attention transfer pairs convolutional feature maps")
        return feature.abs().pow(self.cfg.p).mean(dim=1, keepdim=True)  # [B, 1, H, W]

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        losses = []
        for s_layer, t_layer in self.cfg.pairs:
            q_s = self._attention(self._feature(inputs.student_features, s_layer, "student"), s_layer)
            q_t = self._attention(self._feature(inputs.teacher_features, t_layer, "teacher"), t_layer)
            size = (max(q_s.shape[-2], q_t.shape[-2]), max(q_s.shape[-1], q_t.shape[-1]))
            q_s, q_t = _resized(q_s, size), _resized(q_t, size)
            diff = F.normalize(q_s.flatten(1), dim=1) - F.normalize(q_t.flatten(1), dim=1)
            losses.append(diff.norm(p=2, dim=1).mean())
        return torch.stack(losses).mean()


from edgekd.distill import dkd as _dkd  # noqa: E402,F401  registers 'dkd' (its own module; it imports this one)
