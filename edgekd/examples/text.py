"""Plain-torch text classifiers for `text-classification` projects (torch is imported inside the
factories): token embeddings averaged over the attention mask, then an MLP. The teacher is wider and
deeper than the student. `vocab_size` and `num_labels` come from the project's task (the tokenizer's
vocabulary and the labels' classes) when the project's args leave them out."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def _classifier(vocab_size: int, num_labels: int, width: int, hidden: int) -> nn.Module:
    import torch
    from torch import nn

    class MeanPooledClassifier(nn.Module):
        """input_ids, attention_mask (token_type_ids, where the tokenizer gives them, are ignored)."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size, width)
            self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_labels))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
            pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled)

    return MeanPooledClassifier()


def teacher(vocab_size: int, num_labels: int, width: int = 64) -> nn.Module:
    return _classifier(vocab_size, num_labels, width, 2 * width)


def student(vocab_size: int, num_labels: int, width: int = 16) -> nn.Module:
    return _classifier(vocab_size, num_labels, width, width)
