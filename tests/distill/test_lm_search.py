"""The decoder student search (edgekd.distill.lm_search): candidates scaled from real transformers
decoder configs in whole GQA groups, and the pick (the most parameters meeting every decoder
budget, else the smallest). The costing here is a stand-in with made-up numbers that tests the
selection rule only; tests/test_decoder_search_build.py measures real candidates end to end."""
from __future__ import annotations

from pathlib import Path

import pytest
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM

from edgekd.distill.lm_search import Budget, Candidate, scaled, search_decoder, why_not
from edgekd.errors import ConfigError

LLAMA = LlamaConfig(hidden_size=256, num_attention_heads=8, num_key_value_heads=4, intermediate_size=704, num_hidden_layers=4,
                    vocab_size=100)


def test_llama_candidates_keep_head_size_and_gqa_groups():
    half = scaled(LLAMA, 0.5, 0.5)
    assert half == {"num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 128, "num_hidden_layers": 2,
                    "head_dim": 32, "intermediate_size": 352}
    tiny = scaled(LLAMA, 0.1, 0.1)  # at least one group of heads and one layer
    assert (tiny["num_attention_heads"], tiny["num_key_value_heads"], tiny["num_hidden_layers"]) == (2, 1, 1)
    model = LlamaForCausalLM(LlamaConfig(**{**LLAMA.to_dict(), **half}))  # a model transformers builds
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (64, 128)


def test_gpt2_candidates_use_its_own_field_names():
    out = scaled(GPT2Config(n_embd=128, n_head=4, n_layer=4, vocab_size=100), 0.5, 0.5)
    assert out == {"n_head": 2, "n_embd": 64, "n_layer": 2}


def test_a_config_without_heads_is_a_config_error():
    with pytest.raises(ConfigError, match="no num_attention_heads"):
        scaled(object(), 1.0, 1.0)


def fake_cost(speed_per_param: float):
    """Stand-in costing: params from the real config arithmetic, decode speed inversely proportional."""
    def cost(row: Candidate, config, work: Path) -> None:
        model = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(), **row.overrides}))
        row.params = model.num_parameters()
        row.decode_tokens_per_s, row.ttft_ms, row.peak_memory_mb = speed_per_param / row.params, 1.0, 100.0
        row.how = "stand-in"
    return cost


def test_the_pick_is_the_largest_candidate_meeting_every_budget(tmp_path):
    pairs = [(0.25, 0.5), (0.5, 0.5), (1.0, 1.0)]
    sizes = {w: LlamaForCausalLM(LlamaConfig(**{**LLAMA.to_dict(), **scaled(LLAMA, w, d)})).num_parameters() for w, d in pairs}
    floor = 1e9 / sizes[0.5] * 0.99  # the middle one just makes it, the full one does not
    chosen, rows = search_decoder(LLAMA, pairs, Budget(decode_tokens_per_s=floor), fake_cost(1e9), tmp_path)
    assert chosen.width == 0.5 and [r.fits for r in rows] == [True, True, False]
    assert "decode" in rows[2].why_not[0] and "< budget" in rows[2].why_not[0]
    chosen, rows = search_decoder(LLAMA, pairs, Budget(decode_tokens_per_s=1e12), fake_cost(1e9), tmp_path)
    assert not chosen.fits and chosen.width == 0.25  # none fits: the smallest, whose numbers break the budget
    chosen, _ = search_decoder(LLAMA, pairs, Budget(peak_memory_mb=50.0), fake_cost(1e9), tmp_path)
    assert not chosen.fits and "peak memory" in chosen.why_not[0]


def test_unmeasured_numbers_do_not_meet_a_budget():
    row = Candidate(1.0, 1.0, {}, params=1)
    assert why_not(row, Budget()) == []
    assert len(why_not(row, Budget(decode_tokens_per_s=1.0, ttft_ms=5.0, peak_memory_mb=10.0))) == 3
