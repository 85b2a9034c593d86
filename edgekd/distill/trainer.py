"""Training loops for the teacher (supervised) and the student (distilled), and torch-side metrics."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgekd.config.models import DistillConfig, TrainConfig
from edgekd.data import Split
from edgekd.distill.losses import CombinedLoss, hinton_kd

# (inputs, labels, sample indices) -> loss of one mini-batch
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fit(model: nn.Module, split: Split, epochs: int, lr: float, batch_size: int, seed: int, loss_fn: LossFn, desc: str,
        extra_params: list[nn.Parameter] | None = None, shard: tuple[int, int] = (0, 1)) -> list[float]:
    """AdamW + cosine schedule over seeded shuffled mini-batches; returns the mean loss per epoch.

    `extra_params` are trained with the model (e.g. a FitNet projector). `shard=(rank, world)`: this
    process takes rows rank, rank+world, ... of every global batch (the same global batches in every
    process), for data-parallel training where DDP averages the gradients across processes."""
    rank, world = shard
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = torch.from_numpy(split.x), torch.from_numpy(split.y)
    idx_all = torch.arange(len(y))
    params = [*model.parameters(), *(extra_params or [])]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(y) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history = []
    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False, dynamic_ncols=True, disable=None if rank == 0 else True)
    for _ in bar:
        model.train()
        order = idx_all[torch.randperm(len(y), generator=generator)]
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size][rank::world]
            loss = loss_fn(x[batch], y[batch], batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            count += len(batch)
        history.append(total / count)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    model.eval()
    return history


def train_supervised(model: nn.Module, split: Split, cfg: TrainConfig) -> list[float]:
    ce = nn.CrossEntropyLoss()
    return fit(model, split, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed,
                lambda xb, yb, _: ce(model(xb), yb), "teacher")


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def build_objective(cfg: DistillConfig, key: str = "distill.losses") -> CombinedLoss:
    """The weighted sum of the configured losses; soft-target losses without their own temperature
    take `cfg.temperature`, and Hinton's loss takes `cfg.alpha`. Errors name `key[i]`."""
    from edgekd.distill.losses import LOSSES, CombinedLoss, build_loss

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


def distill(student: nn.Module, split: Split, cfg: DistillConfig, objective: CombinedLoss,
            teacher_logits: np.ndarray | None, teacher_module: nn.Module | None, shard: tuple[int, int] = (0, 1),
            teacher_features: dict[str, np.ndarray] | None = None) -> list[float]:
    """Train `student` on `split` with `objective`. Teacher logits come from `teacher_logits` (one
    row per training sample, computed once: the teacher-logit cache) or, when None, from
    `teacher_module` each step. Features named by the losses are captured with forward hooks on the
    student and, unless `teacher_features` holds them (layer -> one row per training sample: the
    teacher-feature cache), on `teacher_module` each step (edgekd.distill.features.FeatureCapture)."""
    from edgekd.distill.features import FeatureCapture
    from edgekd.distill.losses import LossInputs

    s_layers, t_layers = objective.student_layers(), objective.teacher_layers()
    cached = None if teacher_logits is None else torch.from_numpy(np.ascontiguousarray(teacher_logits, dtype=np.float32))
    feats = None if teacher_features is None else {layer: torch.from_numpy(teacher_features[layer]) for layer in t_layers}
    need_teacher_run = (bool(t_layers) and feats is None) or (objective.needs_teacher_logits() and cached is None)
    if need_teacher_run and teacher_module is None:
        raise ValueError("the losses need a torch teacher (features or uncached logits) and none was given")
    s_cap = FeatureCapture(student, s_layers, source="student")  # layer names checked once, here
    t_cap = FeatureCapture(teacher_module, t_layers if feats is None else [], source="teacher") if need_teacher_run else None
    if teacher_module is not None:
        teacher_module.eval()

    def inputs(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor, epoch: float = 0.0) -> LossInputs:
        with s_cap:
            logits = student(xb)
        t_logits = cached[idx] if cached is not None else None
        t_feats = {} if feats is None else {layer: f[idx] for layer, f in feats.items()}
        if t_cap is not None:
            with torch.no_grad(), t_cap:
                run_logits = teacher_module(xb)
            t_feats = t_feats or dict(t_cap.features)
            t_logits = run_logits if t_logits is None else t_logits
        return LossInputs(logits, t_logits, yb, dict(s_cap.features), t_feats, epoch)

    first = torch.arange(min(len(split.y), cfg.batch_size))
    student.eval()  # one batch, BatchNorm statistics untouched, so losses can size their parameters (FitNet's projector)
    with torch.no_grad():
        probe = inputs(torch.from_numpy(split.x[: len(first)]), torch.from_numpy(split.y[: len(first)]), first)
    objective.setup(probe.student_features, probe.teacher_features)
    steps_per_epoch, step = (len(split.y) + cfg.batch_size - 1) // cfg.batch_size, [0]

    def loss(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        # fit calls this once per global batch, in order (in every process when sharded): the
        # count is the training progress that losses with a warm-up read (LossInputs.epoch)
        epoch, step[0] = step[0] / steps_per_epoch, step[0] + 1
        return objective(inputs(xb, yb, idx, epoch))[0]

    return fit(student, split, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed, loss, "distill",
               extra_params=list(objective.parameters()), shard=shard)


def distill_hinton(student: nn.Module, teacher: nn.Module, split: Split, cfg: DistillConfig) -> list[float]:
    """Hinton KD against a frozen teacher whose logits are computed once (kept for callers that
    want the plain method; the pipeline uses `distill` with the configured losses)."""
    teacher_logits = torch.from_numpy(predict(teacher, split.x))
    return fit(student, split, cfg.epochs, cfg.lr, cfg.batch_size, cfg.seed,
               lambda xb, yb, idx: hinton_kd(student(xb), teacher_logits[idx], yb, cfg.temperature, cfg.alpha),
               "distill")


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one batch-1 forward pass: torch's FlopCounterMode FLOPs / 2
    (counts convolutions and matrix products; element-wise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *input_shape)))
    return int(counter.get_total_flops() // 2)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
