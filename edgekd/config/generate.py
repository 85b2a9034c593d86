"""[distill.generate]: how edgekd makes a local teacher's generations for sequence-level KD
(edgekd.distill.generation); kept beside config/models.py, which holds DistillConfig."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgekd.config.strict import Strict

MAX_TOKENS = 1 << 20
MAX_SEED = 2**32 - 1


class GenerateConfig(Strict):
    """How edgekd makes a local teacher's generations for sequence-level KD (edgekd.distill.generation):
    prompts are the first `prompt_tokens` tokens of each train block (or the lines of `prompts`), each
    continued by `max_new_tokens` tokens `samples_per_prompt` times. `real_fraction` of the training rows
    are real train blocks (for an API teacher too: its responses are the generations)."""

    prompt_tokens: int = Field(8, ge=1, le=MAX_TOKENS, description="prompt length in tokens, cut from the train blocks")
    prompts: str | None = Field(None, description="a text file, one prompt a line (relative to the project file), instead of the train blocks")
    max_new_tokens: int = Field(32, ge=1, le=MAX_TOKENS)
    strategy: Literal["greedy", "sample", "beam"] = "greedy"
    temperature: float = Field(1.0, gt=0, description="sample: logits divided by it")
    top_k: int = Field(0, ge=0, le=MAX_TOKENS, description="sample: keep the k likeliest tokens (0: all)")
    top_p: float = Field(1.0, gt=0, le=1, description="sample: nucleus, the smallest set with this probability mass")
    num_beams: int = Field(4, ge=2, le=64, description="beam: beams per prompt")
    samples_per_prompt: int = Field(1, ge=1, le=1024, description="sequences per prompt (sample: independent draws; beam: the best beams)")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    real_fraction: float = Field(0.0, ge=0, lt=1, description="share of the training rows that are real train blocks")
