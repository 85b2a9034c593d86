"""Where a distillation's teacher outputs come from, step by step.

Without augmentation every sample looks the same in every epoch, so the teacher's logits (and, for
feature losses, its activations) are computed once by streaming the train split and memory-mapped
from the caches (edgekd.distill.logit_cache, edgekd.distill.feature_cache); each step reads the rows
of its batch by batch["index"]. With augmentation the cached rows no longer describe what the student
sees: the teacher runs every step on the same augmented batch as the student ("function matching",
Beyer et al. 2022) and both caches are bypassed. A teacher that answers by sample position only (a
logits file) cannot see an augmented view, so that combination is a ConfigError.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgekd.config.models import DistillConfig
from edgekd.data.sources import INDEX
from edgekd.data.views import teacher_view
from edgekd.distill.features import FeatureCapture
from edgekd.distill.streaming import TrainData
from edgekd.distill.teachers import TeacherSource, TorchTeacher
from edgekd.errors import ConfigError

if TYPE_CHECKING:
    from edgekd.data.augment import Augment
    from edgekd.distill.losses import CombinedLoss
    from edgekd.distill.on_policy import OnPolicy
    from edgekd.tasks.base import Task

FUNCTION_MATCHING = "function matching, Beyer et al. 2022"


@dataclass(frozen=True)
class Teaching:
    """The teacher outputs a distillation reads: `logits` (row i = train sample i, e.g. the
    memory-mapped cache) and `features` (layer -> rows) where computed once; `teacher` runs each step
    for whatever they do not hold. `note` says which, for the stage's notes."""

    teacher: TeacherSource | None = None
    logits: np.ndarray | None = None
    features: dict[str, np.ndarray] | None = None
    note: str = "teacher run every step"
    on_policy: OnPolicy | None = None  # GKD's on-policy steps (edgekd.distill.on_policy), with [distill.on_policy]


def augmented_note(augment: Augment) -> str:
    return (f"augmentation {augment.describe()}: the teacher ran on the same augmented view as the student every step "
            f"({FUNCTION_MATCHING}); the teacher-logit and teacher-feature caches were bypassed")


def plan_teaching(teacher: TeacherSource, data: TrainData, objective: CombinedLoss, cfg: DistillConfig,
                  cache_root: Path) -> Teaching:
    """`plan_outputs`, plus the on-policy half where [distill.on_policy] asks for it (checked here,
    before any teacher logits are cached)."""
    from edgekd.distill.on_policy import plan_on_policy

    on_policy = plan_on_policy(cfg, data.task, teacher, objective)
    if on_policy is not None and on_policy.cfg.lmbda == 1.0:  # every step on-policy: cached logits would go unread
        return Teaching(teacher, note="teacher run on the student's text every step (lambda 1: no teacher-logit cache)",
                        on_policy=on_policy)
    teaching = plan_outputs(teacher, data, objective, cfg, cache_root)
    return teaching if on_policy is None else replace(teaching, on_policy=on_policy)


def plan_outputs(teacher: TeacherSource, data: TrainData, objective: CombinedLoss, cfg: DistillConfig,
                 cache_root: Path) -> Teaching:
    """What `distill` gets for `teacher` under `cfg`: with augmentation, the teacher every step; else
    the cached logits (memory-mapped; always for a teacher that is not a torch module, whose every
    step would be a runtime call) and cached features where `cfg` allows them and they fit."""
    from edgekd.distill.feature_cache import features_for_training
    from edgekd.distill.logit_cache import cached_teacher_logits

    if data.augment is not None:
        if not teacher.reads_inputs:
            raise ConfigError(f"[data] augment needs a teacher that runs on the augmented inputs; {teacher.describe()} answers "
                              "by sample position only", "remove [data] augment, or use a torch or ONNX teacher")
        return Teaching(teacher, note=augmented_note(data.augment))
    if not getattr(teacher, "cacheable", True):  # answers from memory by row (an API teacher's sparse top-k)
        return Teaching(teacher, note=f"teacher targets read by row from {teacher.describe()} every step")
    logits, how = None, "teacher run every step"
    if objective.needs_teacher_logits() and (cfg.teacher_logit_cache or not isinstance(teacher, TorchTeacher)):
        logits, hit = cached_teacher_logits(teacher, data.source, Path(cache_root) / "teacher-logits")
        how = ("teacher logits from the cache (computed in an earlier build), memory-mapped" if hit
               else "teacher logits computed once and cached, memory-mapped")
    features, layers = None, objective.teacher_layers()
    if layers and isinstance(teacher, TorchTeacher):
        features, feature_how = features_for_training(teacher, data.source, layers, cfg, Path(cache_root))
        how = f"{how}; {feature_how}"
    return Teaching(teacher, logits, features, how)


def rows_at(array: np.ndarray, index: torch.Tensor) -> torch.Tensor:
    """The rows `index` names of a (memory-mapped) per-sample array, as a tensor (a copy)."""
    return torch.from_numpy(np.ascontiguousarray(array[index.cpu().numpy()]))


class TeacherStep:
    """The teacher's side of one training step: `step(batch)` -> (raw teacher outputs or None,
    {layer: activation}) for a batch of tensors, from the cached rows where `teaching` has them and
    from running the teacher on this very batch otherwise (its mode is eval, without gradient)."""

    def __init__(self, teaching: Teaching, objective: CombinedLoss, task: Task, augmented: bool) -> None:
        layers = objective.teacher_layers()
        if augmented and (teaching.logits is not None or teaching.features is not None):
            raise ValueError("with augmentation the teacher runs on each augmented batch: cached logits or features "
                             "(rows per sample) do not describe it; pass none")
        self.task = task
        self.logits = teaching.logits if objective.needs_teacher_logits() else None
        self.features = None if teaching.features is None else {layer: teaching.features[layer] for layer in layers}
        run_logits = objective.needs_teacher_logits() and self.logits is None
        run_features = bool(layers) and self.features is None
        self.teacher = teaching.teacher if run_logits or run_features else None
        if (run_logits or run_features) and self.teacher is None:
            raise ValueError("the losses need a teacher run (features or uncached logits) and none was given")
        if run_features and not isinstance(self.teacher, TorchTeacher):
            raise ValueError(f"the losses read teacher layers {layers} and the teacher is not a torch module")
        self.module, self.capture = None, None
        if isinstance(self.teacher, TorchTeacher):
            self.module = self.teacher.module.eval()
            self.capture = FeatureCapture(self.module, layers if run_features else [], source="teacher")

    def __call__(self, batch: dict[str, Any]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        t_logits = None if self.logits is None else rows_at(self.logits, batch[INDEX])
        t_feats = {} if self.features is None else {layer: rows_at(f, batch[INDEX]) for layer, f in self.features.items()}
        if self.teacher is None:
            return t_logits, t_feats
        if self.module is not None and self.capture is not None:  # a torch teacher: its module, hooked, under the training task
            with torch.no_grad(), self.capture:
                out = self.task.forward(self.module, teacher_view(batch))
            t_feats = t_feats or dict(self.capture.features)
        else:  # a black box (ONNX, ensemble): numpy in, numpy out
            arrays = {n: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for n, v in batch.items()}
            out = torch.from_numpy(self.teacher.logits(arrays))
        return (out if t_logits is None else t_logits), t_feats
