"""Token-level objectives for language models: forward KL, reverse KL and the generalized
Jensen-Shannon divergence of GKD (Agarwal et al. 2024, "On-Policy Distillation of Language Models:
Learning from Self-Generated Mistakes", arXiv:2306.13649), registered as 'forward_kl', 'reverse_kl'
and 'gjsd'.

They read the task's KD view: one row per scored token ([N, V], causal-lm's `kd_view`), and return
the mean over those tokens. No T^2 factor: at temperature 1 (what LM distillation uses) they are the
plain divergences, and 'gjsd' equals TRL's `generalized_jsd_loss`. Without a temperature in their
params they take `[distill] temperature` like every soft-target loss: set temperature = 1 for LMs.

beta follows TRL's convention (`trl.experimental.gkd.GKDTrainer.generalized_jsd_loss`, trl 1.16):
the mixture is m = beta * p_teacher + (1 - beta) * p_student, the loss
beta * KL(p_teacher || m) + (1 - beta) * KL(p_student || m); beta = 0 is taken as forward KL
KL(p_teacher || p_student) and beta = 1 as reverse KL KL(p_student || p_teacher), exactly (and
gjsd / beta -> forward KL as beta -> 0, gjsd / (1 - beta) -> reverse KL as beta -> 1).

Teacher logits at or below UNSCORED_LOGIT (or -inf) mark tokens the teacher cannot score
(vocabulary alignment, edgekd.distill.vocab_align; a finite mark, so that the teacher-logit cache,
which refuses non-finite logits, keeps them): both distributions are then compared over the other
tokens only, each renormalised there.

Where TRL is used: tests/distill/test_lm_losses.py checks 'gjsd' against TRL's function (trl is in
the `lm` and `dev` extras). It is not called here: it is a static method of GKDTrainer, whose module
imports TRL's SFTTrainer, accelerate and datasets (seconds of imports, and a runtime dependency for
twenty lines of tensor code). GKDTrainer itself is not used: it is a transformers Trainer over a
chat dataset collated in memory (DataCollatorForChatML), with on-policy generation through
`model.generate` and the teacher run every step; edgekd's trainer streams its data sources, caches
teacher logits, works for plain torch modules too, checks budgets and records provenance. GKD's
on-policy half is edgekd.distill.on_policy.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from edgekd.config.strict import Strict
from edgekd.distill.loss_base import DistillLoss, LossInputs, register

LM_LOSSES = ("forward_kl", "reverse_kl", "gjsd")  # the losses that leave unscored tokens out
UNSCORED_LOGIT = -1e30  # a teacher logit that marks a token the teacher cannot score (far below any real logit)


def scored_columns(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both logits restricted to the tokens the teacher scores (logits above UNSCORED_LOGIT in every
    row): all of them unless the teacher's were aligned from another vocabulary."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student rows {list(student_logits.shape)} and teacher rows {list(teacher_logits.shape)} differ")
    scored = teacher_logits > UNSCORED_LOGIT / 2
    if bool(scored.all()):
        return student_logits, teacher_logits
    cols = scored.all(dim=0).nonzero().squeeze(-1)
    return student_logits[:, cols], teacher_logits[:, cols]


def _log_probs(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = scored_columns(student_logits, teacher_logits.to(student_logits.dtype))
    return F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1)


def _token_mean(per_token: torch.Tensor) -> torch.Tensor:
    """Mean over the rows (tokens); 0 (with a gradient path) when there are none."""
    return per_token.sum() / max(per_token.shape[0], 1)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """[N]: KL(p || q) of each row, from log-probabilities."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_teacher || p_student) per token, mean over the tokens (mode-covering)."""
    s, t = _log_probs(student_logits, teacher_logits, temperature)
    return _token_mean(kl_rows(t, s))


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_student || p_teacher) per token, mean over the tokens (mode-seeking)."""
    s, t = _log_probs(student_logits, teacher_logits, temperature)
    return _token_mean(kl_rows(s, t))


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0) -> torch.Tensor:
    """GKD's generalized JSD in TRL's convention (module docstring), mean over the tokens."""
    if beta == 0.0:
        return forward_kl(student_logits, teacher_logits, temperature)
    if beta == 1.0:
        return reverse_kl(student_logits, teacher_logits, temperature)
    s, t = _log_probs(student_logits, teacher_logits, temperature)
    b = torch.tensor(beta, dtype=s.dtype, device=s.device)
    mixture = torch.logsumexp(torch.stack([s + torch.log1p(-b), t + torch.log(b)]), dim=0)
    return _token_mean(beta * kl_rows(t, mixture) + (1.0 - beta) * kl_rows(s, mixture))


class _KLParams(Strict):
    temperature: float = Field(1.0, gt=0)


class _GJSDParams(Strict):
    beta: float = Field(0.5, ge=0, le=1, description="0: forward KL, 1: reverse KL (TRL's convention)")
    temperature: float = Field(1.0, gt=0)


class _TokenLoss(DistillLoss):
    """A divergence between the teacher's and the student's next-token distributions."""

    def needs_teacher_logits(self) -> bool:
        return True


class _KL(_TokenLoss):
    """KL in one direction (`reverse`) at a temperature."""

    Params = _KLParams
    cfg: _KLParams
    reverse: ClassVar[bool]

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        kl = reverse_kl if self.reverse else forward_kl
        return kl(inputs.student_logits, self._teacher_logits(inputs), self.cfg.temperature)


@register
class ForwardKL(_KL):
    """Token-level forward KL(p_teacher || p_student), mean over the scored tokens."""

    name = "forward_kl"
    reverse = False


@register
class ReverseKL(_KL):
    """Token-level reverse KL(p_student || p_teacher), mean over the scored tokens."""

    name = "reverse_kl"
    reverse = True


@register
class GJSD(_TokenLoss):
    """GKD's generalized Jensen-Shannon divergence with `beta` (TRL's convention), mean over the scored tokens."""

    name = "gjsd"
    Params = _GJSDParams
    cfg: _GJSDParams

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return generalized_jsd(inputs.student_logits, self._teacher_logits(inputs), self.cfg.beta, self.cfg.temperature)
