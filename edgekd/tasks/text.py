"""Token inputs shared by the text tasks: which input names they know, their roles and specs."""
from __future__ import annotations

from collections.abc import Sequence

from edgekd.errors import ConfigError
from edgekd.tasks.base import BATCH_AXIS, SEQUENCE_AXIS, TensorSpec

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
# input name -> role (edgekd.graph.inputs.ROLES); all are int64 [batch_size, sequence_length]
TEXT_INPUTS = {INPUT_IDS: "token_ids", ATTENTION_MASK: "attention_mask", "token_type_ids": "token_type_ids",
               "position_ids": "position_ids"}
DEFAULT_INPUTS = (INPUT_IDS, ATTENTION_MASK)
MIN_LENGTH = 2  # a dynamic sequence axis exports from an example of 2 tokens up


def text_input_names(names: Sequence[str], task: str) -> tuple[str, ...]:
    """`names` checked: known, each once, input_ids among them."""
    names = tuple(names)
    unknown = [n for n in names if n not in TEXT_INPUTS]
    if unknown or INPUT_IDS not in names or len(set(names)) != len(names):
        raise ConfigError(f"task '{task}': input_names {list(names)} must name input_ids once and only known inputs",
                          f"known: {', '.join(TEXT_INPUTS)}")
    return names


def forward_order(names: Sequence[str]) -> tuple[str, ...]:
    """Token inputs in the order a plain module takes them positionally: input_ids, attention_mask,
    token_type_ids, position_ids (the order of BERT-family forward signatures), whatever order a
    tokenizer returned them in; names it does not know keep their place after these."""
    rank = {name: i for i, name in enumerate(TEXT_INPUTS)}
    return tuple(sorted(names, key=lambda n: rank.get(n, len(rank))))


def text_specs(names: Sequence[str]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, "int64", (BATCH_AXIS, SEQUENCE_AXIS), TEXT_INPUTS[n]) for n in names)
