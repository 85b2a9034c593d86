"""Decoder graphs with a KV cache (optimum-onnx's `text-generation-with-past`): one graph that takes
`past_key_values.N.key/value` [batch, kv_heads, past_sequence_length, head_dim] and gives `logits`
and `present.N.key/value`. At past length 0 it is the full-sequence forward (every prompt logit), so
evaluation, calibration and parity feed the data's inputs plus an empty past; the bench's decode
scenario feeds presents back as past (edgekd.perf.decoder).

Here: which inputs of a graph are past key/values, their empty (or fixed-length) values, the data's
feeds completed with them, and the model inputs of a build extended by them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ConfigError
from edgekd.graph.inputs import ModelInputs, ResolvedInput

PAST_PREFIX = "past_key_values"
PRESENT_PREFIX = "present"
PAST_AXIS_NOTE = "decoder past key/values at past length {past} (batch 1)"


@dataclass(frozen=True)
class PastInput:
    """One past key/value input of a graph: its dims as declared and which axis is the past length."""

    name: str
    dtype: str
    dims: tuple[Any, ...]  # int, dim_param name or None per axis
    past_axis: int

    def shape(self, rows: int, past: int) -> tuple[int, ...]:
        """The shape at `rows` samples (axis 0) and `past` cached tokens; other dynamic axes raise."""
        shape = []
        for axis, dim in enumerate(self.dims):
            if axis == 0:
                shape.append(rows)
            elif axis == self.past_axis:
                shape.append(past)
            elif isinstance(dim, int) and dim > 0:
                shape.append(dim)
            else:
                raise ConfigError(f"past input '{self.name}': axis {axis} ({dim}) is neither the batch nor the past length, "
                                  "so edgekd cannot make its empty past", "export the decoder with its head dims fixed")
        return tuple(shape)


def _past_axis(dims: tuple[Any, ...]) -> int:
    named = [a for a, d in enumerate(dims) if isinstance(d, str) and "past" in d.lower() and "+" not in d]
    return named[0] if named else len(dims) - 2


def is_past(name: str) -> bool:
    return name.startswith((PAST_PREFIX, "past.", "cache"))


def past_inputs(args: Any) -> list[PastInput]:
    """The past key/value inputs among `args` (an ONNX Runtime session's `get_inputs()`)."""
    found = []
    for arg in args:
        if not is_past(arg.name):
            continue
        dims = tuple(arg.shape or ())
        dtype = "float16" if "float16" in arg.type else "float32"
        found.append(PastInput(arg.name, dtype, dims, _past_axis(dims)))
    return found


def graph_past_inputs(model: Path) -> list[PastInput]:
    """The past key/value inputs of the ONNX graph at `model` (read without its weights)."""
    import onnx

    return past_inputs_of(onnx.load(str(model), load_external_data=False).graph)


def past_inputs_of(graph: Any) -> list[PastInput]:
    """The past key/value inputs of a loaded ONNX graph."""
    import onnx

    found = []
    for value in graph.input:
        if not is_past(value.name):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim)
        dtype = "float16" if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else "float32"
        found.append(PastInput(value.name, dtype, dims, _past_axis(dims)))
    return found


def _gqa_writes(graph: Any) -> dict[str, str]:
    """past name -> the output of `graph` that the GroupQueryAttention reading it (input 3 or 4) writes
    its present to (output 1 or 2); through If branches, where every branch agrees."""
    pairs: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "GroupQueryAttention":
            pairs.update({node.input[i]: node.output[o] for i, o in ((3, 1), (4, 2)) if len(node.input) > i and len(node.output) > o})
        branches = [a.g for a in node.attribute if a.HasField("g")]
        if node.op_type != "If" or not branches:
            continue
        found = [{past: node.output[[v.name for v in b.output].index(out)] for past, out in _gqa_writes(b).items()
                  if out in [v.name for v in b.output]} for b in branches]
        pairs.update({past: out for past, out in found[0].items() if all(f.get(past) == out for f in found[1:])})
    return pairs


def shared_kv_pairs(graph: Any) -> dict[str, str] | None:
    """past input -> present output for a graph whose every past key/value input is read by a
    GroupQueryAttention node that writes the matching present output ([batch, heads, length, head
    size]): ONNX Runtime's GroupQueryAttention then takes one buffer bound as both (it writes only the
    new tokens into it: onnxruntime-genai's past_present_share_buffer). None for any other graph (an
    unfused attention concatenates past and new keys into a longer present)."""
    pasts, outputs = past_inputs_of(graph), {o.name for o in graph.output}
    writes = _gqa_writes(graph)
    if not pasts or any(len(p.dims) != 4 or p.past_axis != 2 or writes.get(p.name) not in outputs for p in pasts):
        return None
    return {p.name: writes[p.name] for p in pasts}


def has_kv_cache(model: Path) -> bool:
    return bool(graph_past_inputs(model))


def empty_past(pasts: list[PastInput], rows: int) -> dict[str, np.ndarray]:
    """Zero-length past key/values for `rows` samples: the full-sequence forward."""
    return {p.name: np.zeros(p.shape(rows, 0), p.dtype) for p in pasts}


def complete_feeds(session: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feeds` plus an empty past for every past key/value input of `session` they lack (the data's
    token ids and mask evaluate a KV-cache graph as one full-sequence forward)."""
    pasts = [p for p in past_inputs(session.get_inputs()) if p.name not in feeds]
    if not pasts or not feeds:
        return dict(feeds)
    rows = len(next(iter(feeds.values())))
    return {**feeds, **empty_past(pasts, rows)}


def with_past(inputs: ModelInputs, model: Path, past: int = 0) -> ModelInputs:
    """`inputs` (the task's) plus the graph's past key/value inputs at batch 1 and `past` cached
    tokens; `inputs` unchanged for a graph without them."""
    pasts = [p for p in graph_past_inputs(model) if p.name not in inputs.names()]
    if not pasts:
        return inputs
    note = PAST_AXIS_NOTE.format(past=past)
    extra = tuple(ResolvedInput(p.name, p.dtype, p.shape(1, past), "past_key_values",
                                tuple("batch" if a == 0 else note if a == p.past_axis else "the graph" for a in range(len(p.dims))),
                                0) for p in pasts)
    return ModelInputs(inputs.inputs + extra, (*inputs.notes, note))


def complete_for(inputs: ModelInputs, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feeds` plus, for every past key/value input of `inputs` they lack, its value at the resolved
    past length (zeros) with the feeds' rows."""
    missing = [i for i in inputs.inputs if i.role == "past_key_values" and i.name not in feeds]
    if not missing or not feeds:
        return dict(feeds)
    rows = len(next(iter(feeds.values())))
    return {**feeds, **{i.name: np.zeros((rows, *i.shape[1:]), i.dtype) for i in missing}}


@dataclass(frozen=True)
class DecoderShapes:
    """Static shapes of a KV-cache decoder at batch 1 for a fixed context: the prefill (P prompt
    tokens, empty past), one decode step (1 token after C - 1 cached ones, the mask over C), and the
    range covering both (for one TensorRT optimization profile)."""

    prompt: int
    context: int
    prefill: dict[str, tuple[int, ...]]
    decode: dict[str, tuple[int, ...]]
    minimum: dict[str, tuple[int, ...]]
    maximum: dict[str, tuple[int, ...]]


def _phase_shapes(spec: ResolvedInput, prompt: int, context: int) -> tuple[tuple[int, ...], ...]:
    """(prefill, decode, min, max) of one input."""
    if spec.role == "past_key_values":
        axis = spec.shape.index(0) if 0 in spec.shape else len(spec.shape) - 2
        at = [tuple(context - 1 if a == axis else d for a, d in enumerate(spec.shape)),
              tuple(0 if a == axis else d for a, d in enumerate(spec.shape))]
        return at[1], at[0], at[1], at[0]
    if spec.role == "attention_mask":
        return (1, prompt), (1, context), (1, 1), (1, context)
    if spec.role in ("token_ids", "position_ids", "token_type_ids"):
        return (1, prompt), (1, 1), (1, 1), (1, prompt)
    return (spec.shape,) * 4


def decoder_shapes(inputs: ModelInputs, prompt: int, context: int) -> DecoderShapes | None:
    """The prefill/decode shapes of `inputs` (with past key/values) for `prompt` <= `context` - 1
    tokens; None without past key/values."""
    if not any(i.role == "past_key_values" for i in inputs.inputs):
        return None
    if not 1 <= prompt < context:
        raise ValueError(f"a decoder's prompt ({prompt}) must be at least 1 and shorter than its context ({context})")
    table = {i.name: _phase_shapes(i, prompt, context) for i in inputs.inputs}
    return DecoderShapes(prompt, context, *({n: s[k] for n, s in table.items()} for k in range(4)))


def split_calibration(model: Path, calib: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Calibration feeds for a KV-cache graph: each row's first half as the prompt, run by `model`
    (fp32) for its present key/values, and its second half as new tokens with that cache as past, so
    a static quantizer sees real ranges for the cached keys/values (an empty past has none). Feeds
    that already carry a past (decode-step shapes) or a single token are used as they are."""
    from edgekd.common.toolchain import require

    if any(is_past(n) and a.size for n, a in calib.items()):  # already decode steps with a cache (static decode-step shapes)
        return dict(calib)
    ort = require("onnxruntime", "calibrating a decoder")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    length = next(a.shape[1] for n, a in calib.items() if a.ndim == 2)
    if length < 2:  # nothing to split into a prompt and new tokens
        return dict(calib)
    cut = max(1, length // 2)
    prompt = {n: a[:, :cut] if a.ndim == 2 else a for n, a in calib.items()}
    outputs = dict(zip(names, session.run(None, complete_feeds(session, prompt))))
    feeds = {n: (a if "mask" in n else a[:, cut:]) if a.ndim == 2 else a for n, a in calib.items()}
    for p in past_inputs(session.get_inputs()):
        feeds[p.name] = outputs[p.name.replace(PAST_PREFIX, PRESENT_PREFIX)]
    return feeds


def static_decode_calibration(model: Path, calib: Mapping[str, np.ndarray], context: int) -> dict[str, np.ndarray]:
    """Calibration feeds for a static decode graph (1 token after a past of `context` - 1 slots, mask
    over `context`, explicit position_ids): each row's tokens but the last run by `model` (fp32, empty
    past) for its key/values, placed in the first slots of the fixed past (the rest zeros, masked off),
    its last token the new one at its position. Rows must be shorter than `context`."""
    from edgekd.common.toolchain import require

    ort = require("onnxruntime", "calibrating a decoder")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids_name = next(n for n, a in calib.items() if a.ndim == 2 and "mask" not in n and "position" not in n)
    rows, length = calib[ids_name].shape
    if length >= context:
        raise ConfigError(f"calibration rows of {length} tokens do not fit a decode graph over {context} tokens")
    prompt = {n: a[:, :-1] for n, a in calib.items() if "position" not in n}
    if "position_ids" in {i.name for i in session.get_inputs()}:
        prompt["position_ids"] = np.broadcast_to(np.arange(length - 1), (rows, length - 1)).astype(np.int64)
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, complete_feeds(session, prompt))))
    feeds = {ids_name: calib[ids_name][:, -1:], "position_ids": np.full((rows, 1), length - 1, np.int64)}
    for name in (n for n in calib if "mask" in n):
        mask = np.zeros((rows, context), calib[name].dtype)
        mask[:, :length - 1], mask[:, -1] = calib[name][:, :-1], 1  # the row's own mask over its cached tokens
        feeds[name] = mask
    for p in past_inputs(session.get_inputs()):
        present = outputs[p.name.replace(PAST_PREFIX, PRESENT_PREFIX)]
        pad = [(0, 0)] * present.ndim
        pad[p.past_axis] = (0, context - 1 - present.shape[p.past_axis])
        feeds[p.name] = np.pad(present, pad)
    return feeds
