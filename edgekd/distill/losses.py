"""Distillation losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hinton_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. 2015: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard
