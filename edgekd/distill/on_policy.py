"""On-policy distillation (GKD's λ: Agarwal et al. 2024, "On-Policy Distillation of Language Models:
Learning from Self-Generated Mistakes", arXiv:2306.13649), for task causal-lm.

On a fraction λ (`[distill.on_policy] lmbda`) of the training steps the batch is replaced by the
student's own text: each row's first `prompt_tokens` tokens are continued by `max_new_tokens` tokens
sampled from the student at `temperature` (0: greedy), without gradient, in eval mode. The teacher
scores those sequences live (a torch or Hugging Face module, or an ONNX model through ONNX Runtime:
any teacher that reads its inputs; a logits file knows only the train samples), and the losses see
the generated positions only: the prompt's labels are -100, so the task's `kd_view` keeps the rows
that predict a generated token. The other steps are the off-policy ones, unchanged (cached teacher
logits where the run has them). Which steps go on-policy and every draw follow (seed, step number),
so a run is reproducible and the probe batch that sizes the losses draws nothing.

Generation is edgekd's token loop: with the student's KV cache where its forward takes one (Hugging Face
causal LMs: one prompt pass, then one token a step), else over the full sequence each step (the task's
`forward`, so plain torch modules work too; measured here on the Python-docs student, 16 rows of 48 tokens
after 16: 0.12 s a rollout with the cache, 0.62 s without). A row whose prompt holds padding generates too, but its new
tokens are masked out (not scored).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgekd.config.models import DistillConfig
from edgekd.config.on_policy import OnPolicyConfig
from edgekd.data.sources import INDEX
from edgekd.distill.teachers import TeacherSource, TorchTeacher
from edgekd.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from edgekd.distill.loss_base import CombinedLoss
    from edgekd.tasks.base import Task

KEY = "distill.on_policy"
CAUSAL_LM = "causal-lm"
INPUT_IDS, ATTENTION_MASK, LABELS = "input_ids", "attention_mask", "labels"
IGNORE_INDEX = -100
Batch = dict[str, torch.Tensor]


def check_on_policy(cfg: OnPolicyConfig, task: Task, teacher: TeacherSource, objective: CombinedLoss) -> None:
    """Settings that cannot work, as ConfigErrors naming the key."""
    check_on_policy_settings(cfg, task, objective)
    if not teacher.reads_inputs:
        raise ConfigError(f"key '{KEY}': the teacher scores the student's own sequences, and {teacher.describe()} answers "
                          "by sample position only", "use a torch, Hugging Face or ONNX teacher, or remove [distill.on_policy]")


def check_on_policy_settings(cfg: OnPolicyConfig, task: Task, objective: CombinedLoss) -> None:
    """The checks that need no teacher (the build's preflight runs them before any training)."""
    if task.name != CAUSAL_LM:
        raise ConfigError(f"key '{KEY}': on-policy distillation is for task causal-lm, not {task.name}",
                          "remove [distill.on_policy]")
    total, max_length = cfg.prompt_tokens + cfg.max_new_tokens, getattr(task, "max_length", None)
    if max_length is not None and total > max_length:
        raise ConfigError(f"key '{KEY}': prompt_tokens + max_new_tokens = {total} exceeds the data's max_length {max_length}",
                          "the student's sequences must fit its positions: shorten them")
    if not objective.needs_teacher_logits():
        raise ConfigError(f"key '{KEY}': no loss reads the teacher's logits, so the teacher would score nothing",
                          "add a teacher loss, e.g. losses = [{name = \"gjsd\", params = {beta = 0.5}}]")
    if objective.teacher_layers():
        raise ConfigError(f"key '{KEY}': feature losses ({', '.join(objective.teacher_layers())}) need teacher features "
                          "on the student's sequences, which on-policy steps do not capture", "use logit losses (gjsd, forward_kl, reverse_kl)")


def takes_kv_cache(model: nn.Module) -> bool:
    """A Hugging Face causal LM whose forward takes past_key_values and use_cache."""
    accepted = inspect.signature(model.forward).parameters
    return {"past_key_values", "use_cache"} <= set(accepted)


def continue_cached(student: nn.Module, sequences: torch.Tensor, seen: torch.Tensor, new: int,
                    pick: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`new` tokens after `sequences` from one prompt pass and then one token a step with the model's KV cache
    (the same positions and mask as the full-sequence forward, at a fraction of its cost)."""
    out = student(input_ids=sequences, attention_mask=seen, use_cache=True)
    for i in range(new):
        chosen = pick(out.logits[:, -1])
        sequences = torch.cat([sequences, chosen[:, None]], dim=1)
        seen = torch.cat([seen, torch.ones_like(chosen[:, None])], dim=1)
        if i + 1 < new:
            out = student(input_ids=chosen[:, None], attention_mask=seen, past_key_values=out.past_key_values, use_cache=True)
    return sequences


def step_generator(seed: int, step: int) -> torch.Generator:
    state = np.random.SeedSequence((seed, step)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass
class OnPolicy:
    """The on-policy half of a distillation: `takes(step)` says whether a step goes on-policy,
    `rollout(student, batch, step)` makes its batch of student text, `teacher_logits(batch)` scores
    it; `note()` says what happened, for the distill stage's notes."""

    cfg: OnPolicyConfig
    task: Task
    teacher: TeacherSource
    steps: int = field(default=0, init=False)
    on_policy_steps: int = field(default=0, init=False)

    def takes(self, step: int) -> bool:
        self.steps += 1
        chosen = bool(np.random.default_rng((self.cfg.seed, step, 0)).random() < self.cfg.lmbda)
        self.on_policy_steps += chosen
        return chosen

    def next_tokens(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[B] token ids from the last position's [B, V] logits: argmax at temperature 0, else a draw."""
        if self.cfg.temperature == 0:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / self.cfg.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def continue_full(self, student: nn.Module, sequences: torch.Tensor, seen: torch.Tensor, new: int,
                      pick: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """`new` tokens after `sequences`, each from a full-sequence forward (the task's: any torch module)."""
        for _ in range(new):
            chosen = pick(self.task.forward(student, {INPUT_IDS: sequences, ATTENTION_MASK: seen})[:, -1])
            sequences = torch.cat([sequences, chosen[:, None]], dim=1)
            seen = torch.cat([seen, torch.ones_like(chosen[:, None])], dim=1)
        return sequences

    def rollout(self, student: nn.Module, batch: Batch, step: int) -> Batch:
        """The batch's prompts continued by the student: input_ids [B, P + N], attention_mask, labels
        (-100 on the prompt and on masked positions) and the batch's index."""
        ids = torch.as_tensor(batch[INPUT_IDS]).to(torch.int64)
        mask = torch.as_tensor(batch[ATTENTION_MASK]).to(torch.int64) if ATTENTION_MASK in batch else torch.ones_like(ids)
        prompt, new = self.cfg.prompt_tokens, self.cfg.max_new_tokens
        sequences, seen = ids[:, :prompt].clone(), mask[:, :prompt].clone()
        generator = step_generator(self.cfg.seed, step)
        was_training = student.training
        student.eval()
        try:
            with torch.no_grad():
                continued = continue_cached if takes_kv_cache(student) else self.continue_full
                sequences = continued(student, sequences, seen, new, lambda logits: self.next_tokens(logits.cpu(), generator))
        finally:
            student.train(was_training)
        whole_prompt = mask[:, :prompt].all(dim=1, keepdim=True).to(torch.int64)
        attention = torch.cat([mask[:, :prompt], whole_prompt.expand(-1, new)], dim=1)
        labels = sequences.clone()
        labels[:, :prompt] = IGNORE_INDEX
        labels[attention == 0] = IGNORE_INDEX
        return {INPUT_IDS: sequences, ATTENTION_MASK: attention, LABELS: labels, INDEX: torch.as_tensor(batch[INDEX])}

    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        """The teacher's logits on the student's sequences, computed now (eval mode, no gradient)."""
        if isinstance(self.teacher, TorchTeacher):
            return self.teacher.forward(batch)
        arrays: dict[str, Any] = {n: v.cpu().numpy() for n, v in batch.items() if n != LABELS}
        return torch.from_numpy(np.asarray(self.teacher.logits(arrays)))

    def note(self) -> str:
        c = self.cfg
        sampling = "greedy" if c.temperature == 0 else f"sampled at temperature {c.temperature:g}"
        return (f"on-policy distillation (GKD, Agarwal et al. 2024): lambda {c.lmbda:g}, {self.on_policy_steps} of "
                f"{self.steps} steps on the student's own text ({c.max_new_tokens} tokens {sampling} after "
                f"{c.prompt_tokens}-token prompts, seed {c.seed}), scored live by the teacher on the generated tokens only")


def plan_on_policy(cfg: DistillConfig, task: Task, teacher: TeacherSource | None, objective: CombinedLoss) -> OnPolicy | None:
    """The run's on-policy half, checked, or None without [distill.on_policy]."""
    if cfg.on_policy is None:
        return None
    if teacher is None:
        raise ConfigError(f"key '{KEY}': on-policy distillation needs a teacher to score the student's text", "give a [teacher]")
    check_on_policy(cfg.on_policy, task, teacher, objective)
    return OnPolicy(cfg.on_policy, task, teacher)
