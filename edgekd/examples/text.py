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


def _causal_lm(vocab_size: int, width: int, layers: int) -> nn.Module:
    import torch
    from torch import nn

    class CausalConvLM(nn.Module):
        """Token embeddings, `layers` causal 1-D convolutions (kernel 3, padded on the left only, so a
        position sees itself and the two before it), a linear head to the vocabulary: [B, T, V]."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size, width)
            self.convs = nn.ModuleList(nn.Conv1d(width, width, 3) for _ in range(layers))
            self.head = nn.Linear(width, vocab_size)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            h = self.embed(input_ids).transpose(1, 2)  # [B, width, T]
            for conv in self.convs:
                h = h + torch.relu(conv(nn.functional.pad(h, (2, 0))))
            return self.head(h.transpose(1, 2))

    return CausalConvLM()


def lm_teacher(vocab_size: int, width: int = 64, layers: int = 3) -> nn.Module:
    """A small causal language model for `causal-lm` projects (plain torch)."""
    return _causal_lm(vocab_size, width, layers)


def lm_student(vocab_size: int, width: int = 16, layers: int = 2) -> nn.Module:
    return _causal_lm(vocab_size, width, layers)
