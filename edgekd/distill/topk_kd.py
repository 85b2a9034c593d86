"""topk_kd: sparse token-level KD from a teacher's top-k log-probabilities (an API teacher's
`top_logprobs`, edgekd.distill.api_teacher): KL(p_topk || softmax(s)) where p_topk is the teacher's
top-k renormalised over the kept tokens (-inf elsewhere), mean over the rows that have a target; a
row whose teacher log-probabilities are all -inf has none and is skipped. No temperature: an API
gives the distribution at its own sampling temperature, and the tail beyond the top-k is unknown.
With a local teacher's full logits every row has a target and this is KL at T = 1."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.loss_base import DistillLoss, LossInputs, register


def topk_kl(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor) -> torch.Tensor:
    """Mean over targeted rows of sum_v p(v) (log p(v) - log q(v)), p = softmax of the teacher row."""
    has_target = torch.isfinite(teacher_logprobs).any(dim=-1)
    if not bool(has_target.any()):
        return student_logits.sum() * 0.0  # keeps the graph: a batch without targets contributes nothing
    log_q = F.log_softmax(student_logits[has_target].float(), dim=-1)
    log_p = F.log_softmax(teacher_logprobs[has_target].float(), dim=-1)
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1).mean()


@register
class TopKKD(DistillLoss):
    """KL from the teacher's renormalised top-k to the student, on the rows with a target."""

    name = "topk_kd"

    def needs_teacher_logits(self) -> bool:
        return True

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return topk_kl(inputs.student_logits, self._teacher_logits(inputs))
