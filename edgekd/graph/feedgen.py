"""Generated feeds for a model from its resolved inputs in JSON form (numpy only, no edgekd
imports): the same code runs inside edgekd and, copied into a deploy bundle, on the device.

Values match what the model expects (after Polygraphy's data loader: one generator per input from
its metadata): token ids inside the vocabulary, attention masks of ones, token type ids of zeros,
position ids counting on from the past length, past key/values (empty at past length 0) and images
and other float inputs standard-normal (cached keys and values are activations: all-zero ones would
give a quantizer a zero range), ones for bool inputs. Seeded.

An input is a dict: {"name", "dtype", "shape", "role", "batch_axis", "vocab_size"}
(edgekd.graph.inputs.ResolvedInput.to_json()).
"""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

SEED = 0


def past_length(inputs: List[Dict[str, Any]]) -> int:
    """The past sequence length the past key/value inputs carry (0 without them)."""
    past = [i for i in inputs if i["role"] == "past_key_values" and len(i["shape"]) >= 2]
    return int(past[0]["shape"][-2]) if past else 0


def row_shape(spec: Dict[str, Any], rows: Optional[int]) -> Tuple[int, ...]:
    """The input's shape with `rows` on its batch axis (a static batch of 1 stacks rows on axis 0)."""
    shape = [int(d) for d in spec["shape"]]
    if rows is not None and shape:
        if spec.get("batch_axis") is not None:
            shape[spec["batch_axis"]] = rows
        elif shape[0] == 1:
            shape[0] = rows
    return tuple(shape)


def value(spec: Dict[str, Any], shape: Tuple[int, ...], rng: np.random.Generator, past: int) -> np.ndarray:
    """One input's generated value at `shape`."""
    dtype, role = np.dtype(spec["dtype"]), spec["role"]
    if role == "token_ids":
        return rng.integers(0, max(1, int(spec.get("vocab_size") or 1)), size=shape).astype(dtype)
    if role in ("attention_mask", "bool"):
        return np.ones(shape, dtype=dtype)
    if role == "position_ids":
        length = shape[-1] if shape else 1
        return np.broadcast_to(np.arange(past, past + length), shape).astype(dtype)
    if role in ("token_type_ids", "int"):
        return np.zeros(shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def make_feeds(inputs: List[Dict[str, Any]], rows: Optional[int] = None, seed: int = SEED) -> Dict[str, np.ndarray]:
    """One array per input at its resolved shape; with `rows`, the batch axis holds that many rows."""
    rng = np.random.default_rng(seed)
    past = past_length(inputs)
    return {spec["name"]: value(spec, row_shape(spec, rows), rng, past) for spec in inputs}
