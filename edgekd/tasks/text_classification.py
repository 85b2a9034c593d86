"""text-classification: token ids (and their mask, ...) [batch, sequence] -> logits [batch, labels],
as BERT-family sequence classifiers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekd.tasks.base import SEQUENCE_AXIS, TensorSpec, check_dim
from edgekd.tasks.classification import ClassificationTask
from edgekd.tasks.registry import register_task
from edgekd.tasks.text import (
    DEFAULT_INPUTS,
    MIN_LENGTH,
    forward_order,
    text_input_names,
    text_specs,
)


@register_task("text-classification")
@dataclass(frozen=True)
class TextClassification(ClassificationTask):
    """`max_length`: the longest sequence (the default and the bound of the sequence axis);
    `input_names`: the model's inputs in the order a plain module takes them (a BERT export by
    optimum adds token_type_ids)."""

    vocab_size: int
    num_labels: int
    max_length: int
    input_names: tuple[str, ...] = DEFAULT_INPUTS

    optimum_task = "text-classification"

    @classmethod
    def dims_from_data(cls, spec: Any) -> dict[str, Any]:
        """Dims from a data source's spec: the tokenized inputs' names and length, the labels' number
        of classes, the tokenizer's vocabulary."""
        return {"vocab_size": spec.vocab_size, "num_labels": spec.num_classes, "max_length": spec.inputs[0].shape[0],
                "input_names": forward_order([s.name for s in spec.inputs])}

    def __post_init__(self) -> None:
        check_dim(self.name, "vocab_size", self.vocab_size, 1)
        check_dim(self.name, "num_labels", self.num_labels, 2)
        check_dim(self.name, "max_length", self.max_length, MIN_LENGTH)
        object.__setattr__(self, "input_names", text_input_names(self.input_names, self.name))

    @property
    def classes(self) -> int:
        return self.num_labels

    def inputs(self) -> tuple[TensorSpec, ...]:
        return text_specs(self.input_names)

    def axis_sizes(self) -> dict[str, int]:
        return {SEQUENCE_AXIS: self.max_length}

    def vocab_size_of(self, spec: TensorSpec) -> int | None:
        return self.vocab_size if spec.role == "token_ids" else None
