"""The built-in distillation losses (CE, KD, Hinton, FitNet, attention transfer; DKD and the transformer
losses hidden_mse and attention_kl, and the LM losses forward_kl, reverse_kl and gjsd in their own modules),
registered by name in edgekd.distill.loss_base's registry, which this module re-exports."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgekd.config.strict import Strict
from edgekd.distill import (
    dkd,  # noqa: F401  (registers 'dkd')
    lm_losses,  # noqa: F401  (registers 'forward_kl', 'reverse_kl', 'gjsd')
    topk_kd,  # noqa: F401  (registers 'topk_kd': sparse top-k targets, an API teacher's log-probabilities)
    transformer_losses,  # noqa: F401  (registers 'hidden_mse', 'attention_kl')
)
from edgekd.distill.loss_base import (  # noqa: F401  (the registry's public names, re-exported)
    LOSSES,
    CombinedLoss,
    DistillLoss,
    LossInputs,
    NoParams,
    build_loss,
    register,
)
from edgekd.errors import ConfigError


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

