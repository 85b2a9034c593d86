"""Decoupled Knowledge Distillation (Zhao et al., CVPR 2022, arXiv:2203.08679), registered as loss 'dkd'.

The official recipe (mdistiller, `mdistiller/distillers/DKD.py`) trains with CE + DKD and scales the
DKD term by min(epoch / warmup, 1) (warmup 20 of 240 epochs on CIFAR-100), so that the large
beta-weighted NCKD gradients do not swamp a randomly initialized student. `warmup_epochs` is that
ramp; here it is continuous (the trainer passes the fractional epoch in `LossInputs.epoch`), where
mdistiller's steps once per epoch. 0 (the default) is no warm-up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.config.strict import Strict
from edgekd.distill.loss_base import DistillLoss, LossInputs, register


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """Decoupled KD as in the official mdistiller `dkd_loss`:
    TCKD = KL(b_t || b_s) on the binary [p_gt, 1 - p_gt]; NCKD = KL over the non-target classes,
    the gt logit masked out by subtracting 1000 before the softmax; each * T^2, mean over the batch."""
    gt = F.one_hot(labels, student_logits.shape[-1]).to(torch.bool)
    p_s = F.softmax(student_logits / temperature, dim=-1)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)

    def binary(p: torch.Tensor) -> torch.Tensor:  # [B, 2]: target-class and all-other probability
        return torch.stack(((p * gt).sum(-1), (p * ~gt).sum(-1)), dim=-1)

    batch = labels.shape[0]
    tckd = F.kl_div(torch.log(binary(p_s)), binary(p_t), reduction="sum") * temperature**2 / batch
    mask = 1000.0 * gt.to(student_logits.dtype)
    nckd = F.kl_div(F.log_softmax(student_logits / temperature - mask, dim=-1),
                    F.softmax(teacher_logits / temperature - mask, dim=-1),
                    reduction="sum") * temperature**2 / batch
    return alpha * tckd + beta * nckd


class _DKDParams(Strict):
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(8.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    warmup_epochs: float = Field(0.0, ge=0, description="ramp the term linearly from 0 to full weight over this many epochs")


@register
class DKD(DistillLoss):
    """Decoupled Knowledge Distillation: min(epoch / warmup_epochs, 1) * (alpha * TCKD + beta * NCKD)
    at temperature T (see `dkd_loss`). The official recipe adds CE: combine with 'ce'."""

    name = "dkd"
    Params = _DKDParams
    cfg: _DKDParams

    def needs_teacher_logits(self) -> bool:
        return True

    def ramp(self, epoch: float) -> float:
        """The warm-up factor at `epoch` (fractional epochs of training done)."""
        return 1.0 if self.cfg.warmup_epochs == 0 else min(max(epoch, 0.0) / self.cfg.warmup_epochs, 1.0)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return self.ramp(inputs.epoch) * dkd_loss(inputs.student_logits, self._teacher_logits(inputs), inputs.labels,
                                                  self.cfg.alpha, self.cfg.beta, self.cfg.temperature)
