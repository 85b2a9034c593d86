"""Custom augmentations that tests/data/test_augment.py names as "augment_custom:<function>"."""
from __future__ import annotations

import torch


def scale(batch: dict[str, torch.Tensor], generator: torch.Generator, factor: float = 2.0) -> dict[str, torch.Tensor]:
    return {**batch, "input": batch["input"] * factor}


def shift(batch: dict[str, torch.Tensor], generator: torch.Generator, amount: float = 1.0) -> dict[str, torch.Tensor]:
    return {**batch, "input": batch["input"] + amount}


def not_a_dict(batch: dict[str, torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
    return [batch["input"]]


NOT_CALLABLE = 3
