"""Teacher generations (edgekd.distill.generation) on tiny random Hugging Face decoders and a plain
torch LM: each strategy gives what `model.generate` gives; the loop samples reproducibly; the cache
hits on the same settings and misses on others, with its provenance sidecar."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekd.common.version import __version__
from edgekd.config.generate import GenerateConfig
from edgekd.distill.generation import (
    LOOP_ENGINE,
    Specials,
    check_settings,
    generate,
    hf_kwargs,
    next_tokens,
    real_lengths,
)
from edgekd.distill.generation_cache import cached_generations
from edgekd.distill.teachers import TorchTeacher
from edgekd.errors import ConfigError
from edgekd.tasks import get_task

VOCAB, PROMPT = 24, 4


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32)).eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=32)
    return LlamaForCausalLM(config).eval()


def prompts(rows: int = 3) -> np.ndarray:
    return np.random.default_rng(1).integers(2, VOCAB, size=(rows, PROMPT)).astype(np.int64)


SETTINGS = [GenerateConfig(max_new_tokens=6, strategy="greedy"),
            GenerateConfig(max_new_tokens=6, strategy="sample", temperature=0.7, top_k=5, top_p=0.9, samples_per_prompt=2, seed=3),
            GenerateConfig(max_new_tokens=6, strategy="beam", num_beams=3, samples_per_prompt=2)]


@pytest.mark.parametrize("make_model", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("cfg", SETTINGS, ids=[c.strategy for c in SETTINGS])
def test_each_strategy_gives_what_model_generate_gives(make_model, cfg):
    model, specials = make_model(), Specials(pad_id=0, eos_id=None)
    got = generate(TorchTeacher(model, None, "tiny"), prompts(), cfg, specials)
    ids = torch.as_tensor(prompts())
    torch.manual_seed(cfg.seed)
    expected = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **hf_kwargs(cfg, specials)).numpy()
    assert got.sequences.shape == (3 * cfg.samples_per_prompt, PROMPT + cfg.max_new_tokens)
    np.testing.assert_array_equal(got.sequences, expected)
    np.testing.assert_array_equal(got.sequences[:, :PROMPT], np.repeat(prompts(), cfg.samples_per_prompt, axis=0))
    assert (got.lengths == PROMPT + cfg.max_new_tokens).all() and got.engine.startswith("transformers")


def test_an_end_of_sequence_ends_the_row_and_pads_it():
    sequences = np.array([[5, 6, 7, 2, 9], [5, 6, 8, 8, 8]])
    np.testing.assert_array_equal(real_lengths(sequences, 2, eos_id=2), [4, 5])
    np.testing.assert_array_equal(real_lengths(sequences, 2, eos_id=None), [5, 5])


def plain_teacher():
    from edgekd.examples.text import lm_teacher

    torch.manual_seed(0)
    task = get_task("causal-lm", vocab_size=VOCAB, max_length=16)
    return TorchTeacher(lm_teacher(VOCAB, width=16, layers=1).eval(), None, "plain lm", task=task), task


def test_the_loop_decodes_greedily_through_the_full_sequence_forward():
    teacher, task = plain_teacher()
    cfg = GenerateConfig(max_new_tokens=5)
    got = generate(teacher, prompts(), cfg, Specials(0, None))
    assert got.engine == LOOP_ENGINE
    seq = torch.as_tensor(prompts())
    for _ in range(5):  # the reference: argmax of the last position, sequence grown one token at a time
        logits = task.forward(teacher.module, {"input_ids": seq, "attention_mask": torch.ones_like(seq)})
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    np.testing.assert_array_equal(got.sequences, seq.numpy())


def test_the_loop_samples_reproducibly_by_seed():
    teacher, _ = plain_teacher()
    cfg = GenerateConfig(max_new_tokens=5, strategy="sample", samples_per_prompt=3, seed=7)
    first, again = (generate(teacher, prompts(), cfg, Specials(0, None)).sequences for _ in range(2))
    other = generate(teacher, prompts(), cfg.model_copy(update={"seed": 8}), Specials(0, None)).sequences
    np.testing.assert_array_equal(first, again)
    assert first.shape == (9, PROMPT + 5) and not np.array_equal(first, other)


def test_top_k_and_top_p_keep_only_their_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = lambda cfg: {int(next_tokens(logits, cfg, torch.Generator().manual_seed(s))) for s in range(200)}
    assert draws(GenerateConfig(strategy="sample", top_k=2)) == {0, 1}
    assert draws(GenerateConfig(strategy="sample", top_p=0.7)) == {0, 1}  # 0.5 < 0.7 <= 0.8: the first two
    assert draws(GenerateConfig(strategy="sample", top_p=0.4)) == {0}


def test_settings_that_cannot_work_are_config_errors():
    teacher, _ = plain_teacher()
    with pytest.raises(ConfigError, match="beam search"):
        generate(teacher, prompts(), GenerateConfig(strategy="beam"), Specials(0, None))
    with pytest.raises(ConfigError, match="max_length"):
        check_settings(GenerateConfig(prompt_tokens=8, max_new_tokens=10), 16)
    with pytest.raises(ConfigError, match="greedy"):
        check_settings(GenerateConfig(samples_per_prompt=2), 64)


def test_the_cache_hits_on_the_same_settings_and_misses_on_others(tmp_path):
    teacher, _ = plain_teacher()
    calls = []

    def make(cfg):
        def run():
            calls.append(cfg)
            return generate(teacher, prompts(), cfg, Specials(0, None))
        return run

    cfg = GenerateConfig(max_new_tokens=4, strategy="sample", seed=1)
    first = cached_generations(teacher, cfg, "prompts-a", tmp_path, make(cfg))
    again = cached_generations(teacher, cfg, "prompts-a", tmp_path, make(cfg))
    assert not first.hit and again.hit and len(calls) == 1
    np.testing.assert_array_equal(first.generated.sequences, again.generated.sequences)
    mixed = cfg.model_copy(update={"real_fraction": 0.5})  # mixing real text in does not change the generations
    assert cached_generations(teacher, mixed, "prompts-a", tmp_path, make(mixed)).hit
    for changed, prompts_sha in ((cfg.model_copy(update={"seed": 2}), "prompts-a"), (cfg.model_copy(update={"top_k": 3}), "prompts-a"),
                                 (cfg, "prompts-b")):
        assert not cached_generations(teacher, changed, prompts_sha, tmp_path, make(changed)).hit
    assert len(calls) == 4
    provenance = json.loads(first.path.with_suffix(".json").read_text())
    assert provenance["teacher_sha256"] == teacher.weights_sha256 and provenance["seed"] == 1
    assert provenance["count"] == 3 and provenance["settings"]["strategy"] == "sample" and provenance["edgekd_version"] == __version__
    assert provenance["engine"] == LOOP_ENGINE and "real_fraction" not in provenance["settings"]


def test_an_unreadable_entry_is_a_miss_and_is_replaced(tmp_path):
    teacher, _ = plain_teacher()
    cfg = GenerateConfig(max_new_tokens=3)
    made = lambda: generate(teacher, prompts(), cfg, Specials(0, None))
    first = cached_generations(teacher, cfg, "p", tmp_path, made)
    first.path.write_bytes(first.path.read_bytes()[:20])
    again = cached_generations(teacher, cfg, "p", tmp_path, made)
    assert not again.hit and cached_generations(teacher, cfg, "p", tmp_path, made).hit
    assert not list(tmp_path.glob("*.tmp"))


def test_an_onnx_teacher_generates_through_onnx_runtime_as_its_torch_module_does(tmp_path):
    from edgekd.distill.teachers import OnnxTeacher

    teacher, task = plain_teacher()
    path = tmp_path / "teacher.onnx"
    task.export(teacher.module, path, opset=17)
    cfg = GenerateConfig(max_new_tokens=4)
    via_ort = generate(OnnxTeacher(path), prompts(), cfg, Specials(0, None))
    assert via_ort.engine == LOOP_ENGINE
    np.testing.assert_array_equal(via_ort.sequences, generate(teacher, prompts(), cfg, Specials(0, None)).sequences)
