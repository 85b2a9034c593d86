"""onnxruntime-genai's model folder for an x86 decoder engine: genai_config.json beside the model file,
so that `og.Model(folder)` runs edgekd's engine with onnxruntime-genai's generation loop (search,
sampling, KV cache management, its tokenizer where the folder has one).

What genai needs is read from the graph: the token-id, attention-mask and position-id inputs (by the
roles edgekd.graph.inputs gave them), the past and present key/value names per layer (as genai's
"%d" patterns), the key/value heads and head size (the past inputs' dims), the query heads (the
GroupQueryAttention nodes', else the model config's), the vocabulary (the logits' last dim). The
context length is the model's declared positions, else the rows of the graph's position table or
rotary cache (the longest sequence the graph runs). genai's model type is "decoder", its generic
decoder-only model (DecoderOnly_Model): edgekd's engine is an ONNX graph like any other to it.

past_present_share_buffer (genai keeps one max-length key/value buffer per layer, bound as both the
past input and the present output, and the attention writes only the new tokens into it) is on only
where every past input is read by a GroupQueryAttention node (edgekd.graph.gqa_fusion; also inside a
phase-split engine's If branches), which supports it; an unfused attention concatenates past and new
keys into a longer present, so genai then copies its cache each step. On this host's SmolLM-135M
shape the shared buffer measured ~0.8x the per-token time of feeding presents back
(benchmarks/results/genai_runtime.md); edgekd's own ONNX Runtime runner shares them the same way
(edgekd.backends.ort.kv_buffers, on the same test: edgekd.graph.decoder.shared_kv_pairs).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.fsutil import atomic_write_text
from edgekd.graph.decoder import past_inputs_of, shared_kv_pairs
from edgekd.graph.inputs import GraphHints, all_nodes

GENAI_CONFIG = "genai_config.json"
GENAI_TYPE = "decoder"  # onnxruntime-genai's generic decoder-only LLM type
_LAYER = re.compile(r"^(\D*?)(\d+)(\D.*)$")  # past_key_values.3.key -> ("past_key_values.", "3", ".key")


class NotGenai(Exception):
    """The engine has a form onnxruntime-genai's decoder-only model cannot run; the message says which."""


@dataclass(frozen=True)
class GenaiLayout:
    """genai_config.json's content for one engine, and whether its key/value buffers are shared."""

    config: dict[str, Any]
    shared: bool

    def describe(self) -> str:
        d = self.config["model"]["decoder"]
        share = ("past_present_share_buffer on: every past input is read by GroupQueryAttention" if self.shared else
                 "past_present_share_buffer off: the attention is not GroupQueryAttention, so genai copies the cache each step")
        return (f"onnxruntime-genai model folder ({GENAI_CONFIG}, type '{GENAI_TYPE}'): {d['num_hidden_layers']} layers, "
                f"{d['num_attention_heads']} query / {d['num_key_value_heads']} key/value heads of {d['head_size']}, "
                f"context {self.config['model']['context_length']}; {share}")


def _pattern(names: list[str], what: str) -> str:
    """The one "%d" pattern every name of `names` follows with layers 0..n-1, e.g. past_key_values.%d.key."""
    parts = [_LAYER.match(n) for n in names]
    if not parts or any(p is None for p in parts):
        raise NotGenai(f"{what} names {names[:2]} carry no layer number")
    forms = {(p.group(1), p.group(3)) for p in parts if p is not None}
    layers = sorted(int(p.group(2)) for p in parts if p is not None)
    if len(forms) != 1 or layers != list(range(len(names))):
        raise NotGenai(f"{what} names do not follow one pattern over layers 0..{len(names) - 1}")
    head, tail = forms.pop()
    return f"{head}%d{tail}"


def _kv_names(names: list[str], what: str) -> tuple[str, str]:
    keys = [n for n in names if "key" in n.rsplit(".", 1)[-1]]
    values = [n for n in names if "value" in n.rsplit(".", 1)[-1]]
    if not keys or len(keys) != len(values) or len(keys) + len(values) != len(names):
        raise NotGenai(f"its {what} inputs/outputs are not one key and one value per layer")
    return _pattern(keys, f"{what} key"), _pattern(values, f"{what} value")


def genai_layout(model: Path, roles: Mapping[str, str], positions: int | None, query_heads: int | None = None,
                 threads: int = 0, token_ids: dict[str, Any] | None = None) -> GenaiLayout:
    """genai_config.json for the decoder graph `model` (see the module docstring); `roles`: role -> input
    name (edgekd.graph.inputs' roles: token_ids, attention_mask, position_ids);
    `positions`: the context length (the model's declared positions; None: the rows of the graph's position
    table or rotary cache, the longest sequence it runs); `query_heads`: the model config's,
    where no GroupQueryAttention node says; `threads`: intra-op threads (0: genai's default, every core);
    `token_ids`: bos/eos/pad token ids where the model's config has them. Raises NotGenai."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)  # once: an engine's weights are in its one file
    graph, pasts = proto.graph, past_inputs_of(proto.graph)
    if not pasts:
        raise NotGenai("the graph has no past key/value inputs")
    positions = positions or GraphHints(proto).max_positions()
    if positions is None:
        raise NotGenai("its context length is unknown: the model declares no positions (no config.json max_position_embeddings) "
                       "and the graph has no position table or rotary cache")
    if "token_ids" not in roles:
        raise NotGenai("no input has the token_ids role")
    if any(len(p.dims) != 4 or p.past_axis != 2 for p in pasts):
        raise NotGenai("its past key/values are not [batch, heads, past length, head size], the layout genai allocates")
    outputs = [o.name for o in graph.output]
    if len(outputs) != len(pasts) + 1:
        raise NotGenai("its outputs are not the logits and one present per past input")
    past_key, past_value = _kv_names([p.name for p in pasts], "past")
    present_key, present_value = _kv_names([o for o in outputs[1:]], "present")
    kv_heads, head_size = (pasts[0].dims[1], pasts[0].dims[-1])
    vocab = graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    gqa = [n for n in all_nodes(graph) if n.op_type == "GroupQueryAttention"]
    heads = next((a.i for n in gqa for a in n.attribute if a.name == "num_heads"), query_heads)
    if not all(isinstance(d, int) and d > 0 for d in (kv_heads, head_size, vocab)):
        raise NotGenai("its key/value heads, head size or vocabulary are not fixed in the graph")
    if not heads:
        raise NotGenai("its query heads are unknown: no GroupQueryAttention node says, and no model config "
                       "(num_attention_heads) is beside the model")
    declared = {i.name for i in graph.input}
    names = {"input_ids": roles["token_ids"], **{k: roles[k] for k in ("attention_mask", "position_ids") if roles.get(k) in declared}}
    session = {"log_id": "onnxruntime-genai", "provider_options": [], **({"intra_op_num_threads": threads} if threads else {})}
    decoder = {"session_options": session, "filename": model.name, "head_size": head_size, "hidden_size": heads * head_size,
               "num_attention_heads": heads, "num_key_value_heads": kv_heads, "num_hidden_layers": len(pasts) // 2,
               "inputs": {**names, "past_key_names": past_key, "past_value_names": past_value},
               "outputs": {"logits": outputs[0], "present_key_names": present_key, "present_value_names": present_value}}
    shared = shared_kv_pairs(graph) is not None
    config = {"model": {"type": GENAI_TYPE, "context_length": positions, "vocab_size": vocab, **(token_ids or {}), "decoder": decoder},
              "search": {"max_length": positions, "past_present_share_buffer": shared, "do_sample": False, "num_beams": 1}}
    return GenaiLayout(config, shared)


def write_genai_config(folder: Path, layout: GenaiLayout) -> Path:
    """genai_config.json into `folder` (beside the model file it names); its path."""
    import json

    path = folder / GENAI_CONFIG
    atomic_write_text(path, json.dumps(layout.config, indent=2) + "\n")
    return path
