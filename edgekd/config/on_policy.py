"""[distill.on_policy]: GKD's on-policy distillation (edgekd.distill.on_policy); kept beside
config/models.py, which holds DistillConfig."""
from __future__ import annotations

from pydantic import Field

from edgekd.config.strict import Strict

MAX_TOKENS = 1 << 20
MAX_SEED = 2**32 - 1


class OnPolicyConfig(Strict):
    """On a fraction `lmbda` of the training batches (GKD's λ, Agarwal et al. 2024) the student
    continues each row's first `prompt_tokens` tokens by `max_new_tokens` tokens sampled at
    `temperature` (0: greedy), the teacher scores those sequences, and the losses apply to the
    generated tokens only. Which batches, and the draws, follow `seed` and the step number."""

    lmbda: float = Field(0.5, ge=0, le=1, description="fraction of batches on which the student generates (GKD's λ)")
    prompt_tokens: int = Field(8, ge=1, le=MAX_TOKENS, description="prompt length in tokens, cut from each train block")
    max_new_tokens: int = Field(16, ge=1, le=MAX_TOKENS, description="tokens the student samples after each prompt")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of the student (0: greedy)")
    seed: int = Field(0, ge=0, le=MAX_SEED)
