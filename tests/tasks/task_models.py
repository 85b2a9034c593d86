"""Tiny real models for every registered task: plain torch modules and transformers models built
from tiny configs with random weights (nothing is downloaded). `CASES` holds at least one case per
registered task; tests parametrize over it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgekd.tasks import Task, get_task

VOCAB = 50
CLASSES = 3
MAX_LENGTH = 16
IMAGE_SHAPE = (1, 8, 8)
OPSET = 18


class TinyCNN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(IMAGE_SHAPE[0], width, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class BagOfTokens(nn.Module):
    """Masked mean of token embeddings -> class logits; takes (input_ids, attention_mask)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


class CumulativeLM(nn.Module):
    """Each position sees the masked mean of the embeddings up to it -> next-token logits."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Embedding(MAX_LENGTH, width)
        self.head = nn.Linear(2 * width, VOCAB)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        h = self.embed(input_ids) + self.position(torch.arange(input_ids.shape[1], device=input_ids.device))
        seen = (h * mask).cumsum(1) / mask.cumsum(1).clamp(min=1.0)
        return self.head(torch.tanh(torch.cat([h, seen], dim=-1)))


def bert(width: int) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=width, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * width,
        max_position_embeddings=MAX_LENGTH, num_labels=CLASSES, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0))


def gpt2(width: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=MAX_LENGTH, n_embd=width, n_layer=1, n_head=2,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def llama(width: int) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=width, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=2, intermediate_size=2 * width,
                                        max_position_embeddings=MAX_LENGTH))


@dataclass(frozen=True)
class Case:
    """A task with a model family: `model(width)` builds one (teacher wider than student)."""

    id: str
    task_name: str
    build: Callable[[int], nn.Module]
    dims: dict[str, Any] = field(default_factory=dict)

    def task(self) -> Task:
        return get_task(self.task_name, **self.dims)

    def model(self, width: int = 16, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.build(width)


TEXT_DIMS = {"vocab_size": VOCAB, "num_labels": CLASSES, "max_length": MAX_LENGTH}
LM_DIMS = {"vocab_size": VOCAB, "max_length": MAX_LENGTH}
CASES = [
    Case("image-cnn", "image-classification", TinyCNN, {"input_shape": IMAGE_SHAPE, "num_classes": CLASSES}),
    Case("text-bag", "text-classification", BagOfTokens, TEXT_DIMS),
    Case("text-bert", "text-classification", bert, TEXT_DIMS),
    Case("lm-cumulative", "causal-lm", CumulativeLM, LM_DIMS),
    Case("lm-gpt2", "causal-lm", gpt2, LM_DIMS),
    Case("lm-llama", "causal-lm", llama, LM_DIMS),
]


def padded(batch: dict[str, Any], task: Task) -> dict[str, Any]:
    """`batch` with its first row left-padded by two tokens (mask 0) where the task has a mask, and
    for causal-lm one label set to -100."""
    out = {k: v.copy() for k, v in batch.items()}
    if "attention_mask" in out:
        out["attention_mask"][0, :2] = 0
    if task.name == "causal-lm":
        out["labels"][1, 3] = -100
    return out
