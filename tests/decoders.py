"""Decoders exported the way users export them (optimum's text-generation-with-past, random
weights), for the decoder graph tests: a Llama, GPT-2 and other families users ship (FAMILIES), and
greedy generation with a graph's own KV cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekd.tasks import CausalLM
from edgekd.tasks.export import export_hf

VOCAB, LAYERS = 128, 2


# other decoder families users ship: (config class, model class, config arguments beyond the shared ones)
FAMILIES = {
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),  # the head reads the embedding, transposed
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),  # biases on the Q, K and V projections
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 16}),  # per-head RMSNorm of queries and keys
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"attention_multiplier": 0.05, "logits_scaling": 4.0}),
    "phi": ("PhiConfig", "PhiForCausalLM", {"num_key_value_heads": 4}),  # a bias on the head; partial rotary (half); parallel MLP
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}),  # one packed QKV MatMul, sliced; the rotary sliced too
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", {}),  # partial rotary (a quarter); the scale computed from shapes
    "gptj": ("GPTJConfig", "GPTJForCausalLM", {"rotary_dim": 8}),  # sin/cos table read by GatherElements
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {}),  # no rotary (learned positions); one packed QKV Conv1D, Split
    "opt": ("OPTConfig", "OPTForCausalLM", {"ffn_dim": 128, "word_embed_proj_dim": 64}),  # no rotary; the queries scaled before the heads
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"rotary_pct": 0.25}),  # QKV packed per head; a quarter rotary (Pythia's)
    "bloom": ("BloomConfig", "BloomForCausalLM", {}),  # ALiBi: a per-head linear bias on the scores, no positions
    "falcon": ("FalconConfig", "FalconForCausalLM", {"new_decoder_architecture": False, "multi_query": True}),  # a rotary ORT does not fuse
}
_GPT_STYLE = ("gptj", "gpt2")  # their configs' own argument names


def _family(kind: str, kv_heads: int, hidden: int) -> torch.nn.Module:
    """A random-weight model of one of FAMILIES; its biases and norm weights random too (at their
    initial zeros and ones torch.onnx would store one shared constant, hiding a mix-up)."""
    import transformers

    config, cls, extra = FAMILIES[kind]
    shared = ({"vocab_size": VOCAB, "n_embd": hidden, "n_layer": LAYERS, "n_head": 4, "n_positions": 64} if kind in _GPT_STYLE else
              {"vocab_size": VOCAB, "hidden_size": hidden, "intermediate_size": 128, "num_hidden_layers": LAYERS,
               "num_attention_heads": 4, "num_key_value_heads": kv_heads, "max_position_embeddings": 64})
    model = getattr(transformers, cls)(getattr(transformers, config)(**{**shared, **extra})).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(1.0 if param.dim() == 1 and "norm" in name else 0.0, 0.3)
    return model


def export(tmp: Path, kind: str, kv_heads: int = 2, hidden: int = 64) -> tuple[torch.nn.Module, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=128, num_hidden_layers=LAYERS,
                                             num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64))
    else:
        model = _family(kind, kv_heads, hidden)
    path = tmp / kind / "model.onnx"
    export_hf(model.eval(), CausalLM(vocab_size=VOCAB, max_length=16), path, 17, with_past=True)
    return model, path


def generate(model: Path, prompt: np.ndarray, steps: int) -> list[np.ndarray]:
    """Greedy generation with the graph's own cache: the logits of the prompt, then of each step."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import complete_feeds

    session = open_session(model)
    names = [o.name for o in session.get_outputs()]
    feed = complete_feeds(session, {"input_ids": prompt, "attention_mask": np.ones_like(prompt)})
    logits = []
    for _ in range(steps + 1):
        out = dict(zip(names, session.run(None, feed)))
        logits.append(out["logits"])
        length = feed["attention_mask"].shape[1] + 1
        feed = {"input_ids": out["logits"][:, -1:].argmax(-1), "attention_mask": np.ones((1, length), np.int64),
                **{n.replace("present", "past_key_values"): v for n, v in out.items() if n.startswith("present")}}
    return logits
