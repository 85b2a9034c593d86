"""causal-lm: token ids (and their mask, ...) [batch, sequence] -> next-token logits
[batch, sequence, vocab], as GPT-2 / Llama-family decoders.

Labels follow the transformers convention: [batch, sequence] aligned with the input ids (the task
shifts them), -100 where a position is not scored; a batch without labels is scored on its own
input ids. The KD view, the loss and the perplexity all use the same rows: the positions t whose
token and next token are real (attention mask 1 at t and t+1) and whose next label is not -100,
flattened in row-major order, so teacher and student rows line up one for one.

This task owns the seam and its metric; its distillation recipes come later. Hugging Face models
export with optimum-onnx's `text-generation` (no past key/values): one forward over the whole
sequence, what TimeToFirstToken times; a decode-step graph with a cache is not exported here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.common.lazy import LazyModule
from edgekd.errors import DataError
from edgekd.tasks.base import (
    BATCH_AXIS,
    DECODE_TOKENS_PER_SECOND,
    LABELS,
    OFFLINE,
    SEQUENCE_AXIS,
    SINGLE_STREAM,
    TIME_TO_FIRST_TOKEN,
    Batch,
    MetricState,
    Task,
    TensorSpec,
    check_dim,
)
from edgekd.tasks.metrics import PERPLEXITY, PerplexityState
from edgekd.tasks.registry import register_task
from edgekd.tasks.text import (
    ATTENTION_MASK,
    DEFAULT_INPUTS,
    INPUT_IDS,
    MIN_LENGTH,
    forward_order,
    text_input_names,
    text_specs,
)

torch = LazyModule("torch")  # imported on first use: a cached rebuild makes tasks without loading torch
F = LazyModule("torch.nn.functional")

IGNORE_INDEX = -100  # a label that is not scored (transformers' and torch's convention)
LOGITS = "logits"


def next_token_targets(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep [B, T-1] bool, targets [B, T-1] int64): which positions predict a scored, real next
    token, and that token."""
    tokens = torch.as_tensor(batch[LABELS] if LABELS in batch else batch[INPUT_IDS]).to(torch.int64)
    if tokens.dim() != 2:
        raise DataError(f"task 'causal-lm': labels/input_ids must be [batch, sequence], got {list(tokens.shape)}")
    mask = torch.as_tensor(batch[ATTENTION_MASK]) if ATTENTION_MASK in batch else torch.ones_like(tokens)
    real = mask.to(device=tokens.device) != 0
    targets = tokens[:, 1:]
    return real[:, :-1] & real[:, 1:] & (targets != IGNORE_INDEX), targets


@register_task("causal-lm")
@dataclass(frozen=True)
class CausalLM(Task):
    """`max_length`: the longest sequence (default and bound of the sequence axis); `input_names`:
    the model's inputs in the order a plain module takes them (optimum's decoder exports of many
    model types add position_ids; without it the model counts positions itself)."""

    vocab_size: int
    max_length: int
    input_names: tuple[str, ...] = DEFAULT_INPUTS

    metric = PERPLEXITY
    optimum_task = "text-generation"

    @classmethod
    def dims_from_data(cls, spec: Any) -> dict[str, Any]:
        """Dims from a data source's spec: the token blocks' names and length, the vocabulary."""
        return {"vocab_size": spec.vocab_size, "max_length": spec.inputs[0].shape[0], "input_names": forward_order([s.name for s in spec.inputs])}

    def __post_init__(self) -> None:
        check_dim(self.name, "vocab_size", self.vocab_size, 1)
        check_dim(self.name, "max_length", self.max_length, MIN_LENGTH)
        object.__setattr__(self, "input_names", text_input_names(self.input_names, self.name))

    def inputs(self) -> tuple[TensorSpec, ...]:
        return text_specs(self.input_names)

    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(LOGITS, "float32", (BATCH_AXIS, SEQUENCE_AXIS, self.vocab_size)),)

    def axis_sizes(self) -> dict[str, int]:
        return {SEQUENCE_AXIS: self.max_length}

    def vocab_size_of(self, spec: TensorSpec) -> int | None:
        return self.vocab_size if spec.role == "token_ids" else None

    def latency_scenarios(self) -> tuple[str, ...]:
        return (SINGLE_STREAM, OFFLINE, TIME_TO_FIRST_TOKEN, DECODE_TOKENS_PER_SECOND)

    def dummy_labels(self, inputs: Mapping[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The input ids themselves (the model learns to predict each next one)."""
        return np.array(inputs[INPUT_IDS], dtype=np.int64)

    def rows_and_targets(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(kd_view(logits, batch), kd_labels(batch)) in one pass."""
        keep, targets = next_token_targets(batch)
        if logits.dim() != 3 or tuple(logits.shape[:2]) != (keep.shape[0], keep.shape[1] + 1):
            raise ValueError(f"task 'causal-lm': logits {list(logits.shape)} do not match the batch's "
                             f"[{keep.shape[0]}, {keep.shape[1] + 1}] tokens")
        keep = keep.to(logits.device)
        return logits[:, :-1][keep], targets.to(logits.device)[keep]

    def kd_view(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """[N, V]: the logits at the positions that predict a real, scored next token."""
        return self.rows_and_targets(logits, batch)[0]

    def kd_labels(self, batch: Batch) -> torch.Tensor:
        """[N]: the next tokens those rows predict."""
        keep, targets = next_token_targets(batch)
        return targets[keep]

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Next-token cross-entropy, mean over the scored tokens."""
        rows, targets = self.rows_and_targets(logits, batch)
        if rows.shape[0] == 0:
            raise DataError("task 'causal-lm': the batch has no next token to predict (all padding or -100)",
                            "check the data source's attention masks and labels")
        return F.cross_entropy(rows, targets)

    def metric_state(self) -> MetricState:
        return PerplexityState(self.rows_and_targets)
