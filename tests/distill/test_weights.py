"""Weights as safetensors (edgekd.distill.weights): tied tensors (a decoder's input and output
embeddings) are saved once and tied again on load; the header holds only the given metadata."""
from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from edgekd.distill.weights import load_weights, read_metadata, save_weights, tied_names
from edgekd.errors import ConfigError


def llama(tied: bool, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=32, tie_word_embeddings=tied))


def test_tied_embeddings_are_saved_once_and_tied_again(tmp_path):
    model, path = llama(True, 0), tmp_path / "w.safetensors"
    assert tied_names(model) == {"lm_head.weight"} and tied_names(llama(False, 0)) == set()
    save_weights(model, path, {"edgekd.graph.provenance": "{}"})
    assert read_metadata(path) == {"edgekd.graph.provenance": "{}"}  # nothing else in the header
    again = load_weights(llama(True, 1), path, "student")
    assert torch.equal(again.lm_head.weight, model.lm_head.weight) and again.lm_head.weight is again.model.embed_tokens.weight
    ids = torch.randint(0, 50, (1, 6))
    assert torch.equal(again(ids).logits, model.eval()(ids).logits)
    copy = tmp_path / "again.safetensors"
    save_weights(again, copy, {"edgekd.graph.provenance": "{}"})
    assert copy.read_bytes() == path.read_bytes()  # equal weights, equal bytes


def test_an_untied_model_cannot_load_tied_weights_silently(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(llama(True, 0), path)
    with pytest.raises(ConfigError, match="missing keys .'lm_head.weight'"):
        load_weights(llama(False, 0), path, "student")
