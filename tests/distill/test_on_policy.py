"""On-policy distillation (edgekd.distill.on_policy): the student's rollouts, what the teacher scores,
which rows the losses see, the settings' errors, and a tiny GPT-2 student learning from a tiny Llama
teacher on its own text."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from distill_data import LENGTH, VOCAB, TinyLM, TokenBlocks, image_data, tiny_net

from edgekd.config.models import DistillConfig
from edgekd.data.load import as_source
from edgekd.distill.on_policy import OnPolicy, step_generator
from edgekd.distill.streaming import TrainData
from edgekd.distill.teachers import TorchTeacher
from edgekd.distill.teaching import plan_teaching
from edgekd.distill.trainer import build_objective, distill, to_tensors
from edgekd.errors import ConfigError
from edgekd.tasks import get_task

PROMPT, NEW = 2, 4
GJSD = [{"name": "gjsd", "params": {"beta": 0.5, "temperature": 1.0}}]


def token_data(n: int = 12) -> TrainData:
    source = as_source({"train": TokenBlocks(n), "calib": TokenBlocks(3, 1), "test": TokenBlocks(3, 2)}, "token blocks")
    return TrainData(source, get_task("causal-lm", vocab_size=VOCAB, max_length=LENGTH))


def gpt2(seed: int, width: int = 16) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=width, n_layer=1, n_head=2))


def llama(seed: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=16)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a peaked teacher, so that matching it is a real target
        model.lm_head.weight.mul_(8.0)
    return model.eval()


class SpyTeacher(TorchTeacher):
    """A torch teacher that keeps the input ids of every batch it scores live."""

    def __init__(self, module: torch.nn.Module, task: object) -> None:
        super().__init__(module, None, "spy teacher", task=task)  # type: ignore[arg-type]
        self.seen: list[torch.Tensor] = []

    def forward(self, batch):
        self.seen.append(torch.as_tensor(batch["input_ids"]).clone())
        return super().forward(batch)


class Recorded(OnPolicy):
    """OnPolicy that keeps the input ids of every rollout it made."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.rollouts: list[torch.Tensor] = []

    def rollout(self, student, batch, step):
        out = super().rollout(student, batch, step)
        self.rollouts.append(out["input_ids"].clone())
        return out


class ByPosition:
    """A teacher that answers by sample position only (what a logits file is to on-policy steps)."""

    reads_inputs = False

    def describe(self) -> str:
        return "logits file soft.npz"


def on_policy_cfg(losses: list | None = None, epochs: int = 1, **over: object) -> DistillConfig:
    settings = {"lmbda": 1.0, "prompt_tokens": PROMPT, "max_new_tokens": NEW, "temperature": 1.0, "seed": 3} | over
    return DistillConfig(epochs=epochs, batch_size=4, lr=1e-2, losses=losses or GJSD, on_policy=settings)


def test_a_rollout_keeps_the_prompt_and_scores_the_generated_tokens_only() -> None:
    data = token_data()
    cfg = on_policy_cfg()
    policy = OnPolicy(cfg.on_policy, data.task, TorchTeacher(TinyLM(seed=1), None, "t", task=data.task))
    batch = to_tensors(next(data.source.batches("train", 4, seed=0)))
    out = policy.rollout(gpt2(0), batch, step=5)
    assert out["input_ids"].shape == (4, PROMPT + NEW)
    assert torch.equal(out["input_ids"][:, :PROMPT], batch["input_ids"][:, :PROMPT])
    assert (out["labels"][:, :PROMPT] == -100).all() and torch.equal(out["labels"][:, PROMPT:], out["input_ids"][:, PROMPT:])
    keep, targets = data.task.kd_labels(out), out["input_ids"][:, PROMPT:].reshape(-1)
    assert torch.equal(keep, targets)  # one KD row per generated token, none for the prompt
    assert torch.equal(policy.rollout(gpt2(0), batch, step=5)["input_ids"], out["input_ids"])  # (seed, step) fixes the draws


def test_greedy_rollout_is_the_students_argmax_continuation() -> None:
    data = token_data()
    student = gpt2(0)
    policy = OnPolicy(on_policy_cfg(temperature=0.0).on_policy, data.task, TorchTeacher(TinyLM(seed=1), None, "t", task=data.task))
    batch = to_tensors(next(data.source.batches("train", 2, seed=0)))
    out = policy.rollout(student, batch, step=0)["input_ids"]
    with torch.no_grad():
        logits = student(input_ids=out).logits
    assert torch.equal(logits[:, PROMPT - 1:-1].argmax(-1), out[:, PROMPT:])


def test_the_teacher_scores_only_the_students_text_and_the_student_learns(tmp_path) -> None:
    data = token_data(16)
    cfg = on_policy_cfg(epochs=4)
    objective = build_objective(cfg)
    teacher = SpyTeacher(llama(1), data.task)
    teaching = plan_teaching(teacher, data, objective, cfg, tmp_path)
    assert teaching.on_policy is not None and teaching.logits is None  # lambda 1: nothing is cached
    recorded = Recorded(cfg.on_policy, data.task, teacher)
    teaching = replace(teaching, on_policy=recorded)
    rollouts = recorded.rollouts
    student = gpt2(2)
    losses = distill(student, data, cfg, objective, teaching)
    live = teacher.seen  # (the probe batch that sizes the losses goes through TeacherStep, off-policy)
    assert len(live) == 4 * 4 and len(rollouts) == len(live)
    assert all(torch.equal(s, r) for s, r in zip(live, rollouts))  # the teacher scored exactly the student's sequences
    real = {tuple(row) for row in TokenBlocks(16).ids[:, PROMPT:PROMPT + NEW].tolist()}
    generated = {tuple(row.tolist()) for seq in live for row in seq[:, PROMPT:]}
    assert generated - real  # the scored positions hold the student's tokens, not the data's
    assert losses[-1] < losses[0] * 0.8
    assert "lambda 1, 16 of 16 steps on the student's own text" in recorded.note()


def test_lambda_picks_that_fraction_of_steps_reproducibly() -> None:
    data = token_data()
    make = lambda: OnPolicy(on_policy_cfg(lmbda=0.3).on_policy, data.task, TorchTeacher(TinyLM(), None, "t", task=data.task))
    a, b = make(), make()
    picks = [a.takes(step) for step in range(400)]
    assert picks == [b.takes(step) for step in range(400)]
    assert 0.22 < np.mean(picks) < 0.38 and a.on_policy_steps == sum(picks) and a.steps == 400


def test_off_policy_steps_keep_the_cached_teacher_logits(tmp_path) -> None:
    data = token_data()
    cfg = on_policy_cfg(lmbda=0.5, epochs=4)
    objective = build_objective(cfg)
    module = TinyLM(seed=1)
    teaching = plan_teaching(TorchTeacher(module, None, "t", task=data.task), data, objective, cfg, tmp_path)
    assert isinstance(teaching.logits, np.memmap) and teaching.on_policy is not None
    calls: list[int] = []
    module.register_forward_hook(lambda *_: calls.append(1))  # after the cache was filled
    distill(TinyLM(width=4, seed=2), data, cfg, objective, teaching)
    assert 0 < teaching.on_policy.on_policy_steps < teaching.on_policy.steps == 12
    assert len(calls) == teaching.on_policy.on_policy_steps  # the teacher runs on on-policy steps only


@pytest.mark.parametrize("case,match", [
    ("image", "on-policy distillation is for task causal-lm, not image-classification"),
    ("long", "prompt_tokens \\+ max_new_tokens = 7 exceeds the data's max_length 6"),
    ("ce", "no loss reads the teacher's logits"),
    ("logits_file", "answers by sample position only"),
])
def test_settings_that_cannot_work_are_config_errors(case: str, match: str, tmp_path) -> None:
    data, cfg = token_data(), on_policy_cfg()
    teacher = TorchTeacher(TinyLM(seed=1), None, "t", task=data.task)
    if case == "image":
        data, teacher = image_data(), TorchTeacher(tiny_net(), None, "t")
    elif case == "long":
        cfg = on_policy_cfg(max_new_tokens=5)
    elif case == "ce":
        cfg = on_policy_cfg(losses=[{"name": "ce"}])
    else:
        teacher = ByPosition()  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=match):
        plan_teaching(teacher, data, build_objective(cfg), cfg, tmp_path)


def test_the_settings_enter_the_distill_stage_key() -> None:
    from types import SimpleNamespace

    from edgekd.stages.distill import distill_key

    def key(cfg: DistillConfig) -> dict:
        project = SimpleNamespace(teacher=DistillConfig(), distill=cfg)  # any model with model_dump() stands for the teacher
        return distill_key(SimpleNamespace(project=project, data_fingerprint="d", model_inputs=SimpleNamespace(key=lambda: "i"),
                                           augment_key=dict))  # type: ignore[arg-type]

    off = key(DistillConfig(losses=GJSD))
    assert len({str(k) for k in (off, key(on_policy_cfg()), key(on_policy_cfg(lmbda=0.5)), key(on_policy_cfg(seed=4)),
                                 key(DistillConfig(losses=GJSD, vocab_alignment="shared_tokens")))}) == 5


def test_the_kv_cache_rollout_equals_the_full_sequence_one() -> None:
    """Hugging Face students continue with their KV cache: the same tokens (greedy and sampled) as the
    full-sequence loop every plain torch module gets."""
    from edgekd.distill.on_policy import continue_cached, takes_kv_cache

    data = token_data()
    batch = to_tensors(next(data.source.batches("train", 2, seed=0)))
    ids, mask = batch["input_ids"][:, :PROMPT].long(), batch["attention_mask"][:, :PROMPT].long()
    for temperature in (0.0, 1.0):
        policy = OnPolicy(on_policy_cfg(temperature=temperature).on_policy, data.task, TorchTeacher(TinyLM(seed=1), None, "t", task=data.task))
        for student in (gpt2(0).eval(), llama(3)):
            assert takes_kv_cache(student) and not takes_kv_cache(TinyLM(seed=1))
            runs = []
            for continued in (continue_cached, policy.continue_full):
                generator = step_generator(0, 7)
                with torch.no_grad():
                    runs.append(continued(student, ids, mask, 4, lambda logits, g=generator, p=policy: p.next_tokens(logits, g)))
            assert runs[0].shape == (2, PROMPT + 4) and torch.equal(runs[0], runs[1])
