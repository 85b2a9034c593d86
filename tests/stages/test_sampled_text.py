"""edgekd.stages.sampled_text and the compile context of a decoder: a KV-cache decoder compiled without
data is a causal LM measured by perplexity on text its fp32 graph samples itself (tiny Llama and GPT-2,
random weights; one Llama's head scaled up so that its next-token distributions are peaked)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.graph.feeds import random_feedset
from edgekd.graph.resolve import load_inputs
from edgekd.pipeline.evaluation import quality_metric
from edgekd.stages.compile_context import language_model
from edgekd.stages.sampled_text import _softmax_sample, sampled_feedset
from edgekd.tasks import CausalLM
from edgekd.tasks.export import export_hf

VOCAB, LENGTH = 96, 24
SHAPES = {"input_ids": (1, LENGTH), "attention_mask": (1, LENGTH)}


def _llama(scale: float) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def peaked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoder whose next-token distributions are far from flat (its head scaled x200)."""
    path = tmp_path_factory.mktemp("peaked") / "model.onnx"
    export_hf(_llama(200.0), CausalLM(vocab_size=VOCAB, max_length=8), path, 17, with_past=True)
    return path


def test_sampling_follows_the_softmax() -> None:
    rng = np.random.default_rng(0)
    one_hot = np.full((50, 10), -1e4)
    one_hot[:, 7] = 0.0
    assert (_softmax_sample(one_hot, rng) == 7).all()  # all the mass on one token
    draws = _softmax_sample(np.zeros((20000, 4)), rng).ravel()  # flat: each token about a quarter of the time
    assert np.allclose(np.bincount(draws, minlength=4) / len(draws), 0.25, atol=0.02)


def test_a_kv_cache_decoder_is_a_causal_lm_at_its_sequence(peaked: Path) -> None:
    task = language_model(peaked, load_inputs(peaked, SHAPES))
    assert isinstance(task, CausalLM) and task.vocab_size == VOCAB and task.max_length == LENGTH  # the build's sequence
    assert language_model(peaked, load_inputs(peaked, {}, static=True)) is None  # one decode step: no sequence to score


def test_the_model_scores_its_own_text_far_better_than_random_ids(peaked: Path) -> None:
    inputs = load_inputs(peaked, SHAPES)
    task = language_model(peaked, inputs)
    sampled = sampled_feedset(peaked, inputs, 4, seed=1)
    assert sampled is not None and not sampled.fit_for_accuracy and "sampled itself" in sampled.description
    ids = sampled.arrays["input_ids"]
    assert ids.shape == (4, LENGTH) and ids.min() >= 0 and ids.max() < VOCAB
    assert (sampled.arrays["attention_mask"] == 1).all()
    again = sampled_feedset(peaked, inputs, 4, seed=1)
    assert again is not None and (again.arrays["input_ids"] == ids).all()  # seeded: the stage cache's data key holds

    from edgekd.backends.ort.session import predict_file

    def perplexity(feeds) -> float:
        return quality_metric(task.metric, feeds, predict_file(peaked, feeds.arrays), "here", task).value

    own, noise = perplexity(sampled), perplexity(random_feedset(inputs, 4, seed=1))
    assert own < 0.2 * noise, (own, noise)  # the peaked model writes text it finds likely; random ids it does not
