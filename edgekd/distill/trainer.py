"""Training loops for the teacher (supervised) and the student (distilled) over a streamed train
split, and torch-side model sizes.

Every epoch draws the source's train batches shuffled with seed `seed + epoch` (a seeded permutation
of positions, or a seeded shuffle buffer: edgekd.data.sources), so nothing holds the split in
memory. A batch of named numpy arrays becomes a dict of tensors; the project's augmentation, if any,
is applied to the whole (global) batch with a torch.Generator seeded by (seed, epoch, step), so a run
is reproducible and every data-parallel process sees the same augmented global batch before taking
its rows rank::world. How a batch goes through a model, its loss and the view the KD losses see are
the task's (edgekd.tasks: `forward`, `task_loss`, `kd_view`, `kd_labels`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgekd.config.models import DistillConfig, TrainConfig
from edgekd.data.sources import INDEX
from edgekd.data.views import teacher_view
from edgekd.distill.losses import CombinedLoss, LossInputs
from edgekd.distill.streaming import TRAIN, TrainData, count_samples, first_batch
from edgekd.distill.teaching import TeacherStep, Teaching
from edgekd.errors import ConfigError

Batch = dict[str, torch.Tensor]
WEIGHT_DECAY = 1e-4


@dataclass(frozen=True)
class FitPlan:
    """How long and how fast to train; `shard=(rank, world)`: this process takes rows rank, rank+world,
    ... of every global batch (the same global batches in every process), for data-parallel training
    where DDP averages the gradients across processes."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    desc: str = "train"
    shard: tuple[int, int] = (0, 1)
    warmup_ratio: float = 0.0

    @classmethod
    def of(cls, cfg: TrainConfig | DistillConfig, desc: str, shard: tuple[int, int] = (0, 1)) -> FitPlan:
        return cls(cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed, desc, shard, cfg.warmup_ratio)


def lr_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay over `total_steps`; with `warmup_ratio` > 0, a linear warm-up from lr/100 over
    that fraction of the steps first (what transformers trained from scratch need to stay stable)."""
    warmup = int(round(total_steps * warmup_ratio))
    if warmup == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warmup)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])


@dataclass(frozen=True)
class Step:
    """One optimizer step: its epoch, its number from 0 over the whole run, the training progress in
    epochs (1.5: half-way through the second; what losses with a warm-up read) and the rows of the
    global batch before sharding."""

    epoch: int
    number: int
    progress: float
    global_rows: int


LossFn = Callable[[Batch, Step], torch.Tensor]  # (this process's rows of a batch, the step) -> loss


def to_tensors(batch: Mapping[str, Any]) -> Batch:
    """A batch of named numpy arrays as tensors (shared memory, no copy where the array allows)."""
    return {name: value if isinstance(value, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(value))
            for name, value in batch.items()}


def shard_rows(batch: Batch, rank: int, world: int) -> Batch:
    """Rows rank::world of every per-sample tensor (those with the batch's rows on axis 0); others
    (e.g. mixup's one lambda per batch) are kept whole."""
    if world == 1:
        return batch
    rows = len(batch[INDEX])
    return {name: t[rank::world] if t.dim() >= 1 and t.shape[0] == rows else t for name, t in batch.items()}


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The augmentations' generator of one step: seeded by (seed, epoch, step in the epoch)."""
    state = np.random.SeedSequence((seed, epoch, step)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def epoch_batches(data: TrainData, plan: FitPlan, epoch: int) -> Iterator[tuple[int, Batch]]:
    """(rows of the global batch, this process's rows of it after augmentation) for one epoch."""
    rank, world = plan.shard
    for step, arrays in enumerate(data.source.batches(TRAIN, plan.batch_size, seed=plan.seed + epoch)):
        batch = to_tensors(arrays)
        if data.augment is not None:
            batch = data.augment(batch, step_generator(plan.seed, epoch, step))
        yield len(arrays[INDEX]), shard_rows(batch, rank, world)


def fit(model: nn.Module, data: TrainData, plan: FitPlan, loss_fn: LossFn,
        extra_params: list[nn.Parameter] | None = None) -> list[float]:
    """AdamW + cosine schedule (after a linear warm-up, if the plan has one) over the source's seeded, shuffled train batches; returns the mean loss
    per epoch. `extra_params` are trained with the model (e.g. a FitNet projector)."""
    torch.manual_seed(plan.seed)
    params = [*model.parameters(), *(extra_params or [])]
    optimizer = torch.optim.AdamW(params, lr=plan.lr, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = max(1, math.ceil(count_samples(data.source) / plan.batch_size))
    schedule = lr_schedule(optimizer, plan.epochs * steps_per_epoch, plan.warmup_ratio)
    history, number = [], 0
    bar = tqdm(range(plan.epochs), desc=plan.desc, unit="epoch", leave=False, dynamic_ncols=True,
               disable=None if plan.shard[0] == 0 else True)
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for global_rows, batch in epoch_batches(data, plan, epoch):
            loss = loss_fn(batch, Step(epoch, number, number / steps_per_epoch, global_rows))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            rows = len(batch[INDEX])
            total += loss.item() * rows
            count += rows
            number += 1
        history.append(total / max(count, 1))
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    model.eval()
    return history


def train_supervised(model: nn.Module, data: TrainData, cfg: TrainConfig) -> list[float]:
    """The task's loss on the labels (with mixup: the task mixes its two targets), on the batches'
    teacher view (edgekd.data.views: the same batch unless the data gives the teacher its own)."""
    task = data.task
    return fit(model, data, FitPlan.of(cfg, "teacher"),
               lambda batch, _: task.task_loss(task.forward(model, teacher_view(batch)), batch))


def build_objective(cfg: DistillConfig, key: str = "distill.losses") -> CombinedLoss:
    """The weighted sum of the configured losses; soft-target losses without their own temperature
    take `cfg.temperature`, and Hinton's loss takes `cfg.alpha`. Errors name `key[i]`."""
    from edgekd.distill.losses import LOSSES, build_loss

    terms = []
    for i, spec in enumerate(cfg.losses):
        params = dict(spec.params)
        fields = LOSSES[spec.name].Params.model_fields if spec.name in LOSSES else {}
        if "temperature" in fields:
            params.setdefault("temperature", cfg.temperature)
        if spec.name == "hinton":
            params.setdefault("alpha", cfg.alpha)
        terms.append((spec.weight, build_loss(spec.name, params, key=f"{key}[{i}]")))
    return CombinedLoss(terms, key=key)


def distill(student: nn.Module, data: TrainData, cfg: DistillConfig, objective: CombinedLoss, teaching: Teaching,
            shard: tuple[int, int] = (0, 1)) -> list[float]:
    """Train `student` on the train split with `objective`. Student and teacher outputs go through
    the task: `task.forward`, then `task.kd_view` is what every KD loss sees ([N, V]: one row per
    sample, or per scored token) with `task.kd_labels`. Teacher outputs come from `teaching`: cached
    rows by batch["index"], or the teacher run on this very batch (edgekd.distill.teaching). Features
    named by the losses are captured with forward hooks (edgekd.distill.features.FeatureCapture);
    the objective's own parameters (FitNet's projector) are set up from one batch before training."""
    from edgekd.distill.features import FeatureCapture

    task = data.task
    teacher = TeacherStep(teaching, objective, task, augmented=data.augment is not None)
    s_cap = FeatureCapture(student, objective.student_layers(), source="student")  # layer names checked once, here
    on_policy = teaching.on_policy
    if cfg.on_policy is not None and on_policy is None:
        raise ConfigError("key 'distill.on_policy': this run's teaching has no on-policy half (distributed runs do not "
                          "generate)", "remove [distill.on_policy], or distill in one process (edgekd build)")

    def inputs(batch: Batch, progress: float, number: int | None = None) -> LossInputs:
        live = on_policy if on_policy is not None and number is not None and on_policy.takes(number) else None
        if live is not None and number is not None:  # GKD's on-policy step: the student's own text (edgekd.distill.on_policy)
            batch = live.rollout(student, batch, number)
        with s_cap:
            logits = task.forward(student, batch)
        t_logits, t_feats = (live.teacher_logits(batch), {}) if live is not None else teacher(batch)
        view = task.kd_view(logits, batch)
        t_view = None if t_logits is None else task.kd_view(t_logits.to(view.device, torch.float32), batch)
        mask = batch.get("attention_mask")
        return LossInputs(view, t_view, task.kd_labels(batch).to(view.device), dict(s_cap.features),
                          {layer: f.to(view.device) for layer, f in t_feats.items()}, progress,
                          None if mask is None else torch.as_tensor(mask).to(view.device))

    student.eval()  # one batch, BatchNorm statistics untouched, so losses can size their parameters (FitNet's projector)
    with torch.no_grad():
        probe = inputs(to_tensors(first_batch(data.source, cfg.batch_size)), 0.0)
    objective.setup(probe.student_features, probe.teacher_features)
    return fit(student, data, FitPlan.of(cfg, "distill", shard), lambda batch, step: objective(inputs(batch, step.progress, step.number))[0],
               extra_params=list(objective.parameters()))


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one batch-1 forward pass of a single-input model: torch's
    FlopCounterMode FLOPs / 2 (counts convolutions and matrix products; element-wise ops are not)."""
    return count_task_macs(model, lambda m: m(torch.zeros((1, *input_shape))))


def count_task_macs(model: nn.Module, forward: Callable[[nn.Module], Any]) -> int:
    """Multiply-accumulates of `forward(model)` (e.g. the task's forward on its batch-1 dummy inputs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward(model)
    return int(counter.get_total_flops() // 2)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
