"""edgekd/distill/trainer.py: training streams the source's train batches through the task.

What changed from the Split-based trainer, said by these tests: the epoch order is the source's own
seeded order (`seed + epoch`: numpy's permutation for in-memory data) instead of one torch.randperm
generator over all epochs, so a student trained with the same seed differs from one trained before
the change; for the same seed and source it is reproducible, and it is exactly the plain loop below.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distill_data import CLASSES, SHAPE, Stream, image_data, tiny_net
from torch import nn

from edgekd.config.models import AugmentSpec, DistillConfig, TrainConfig
from edgekd.data.augment import build_augment
from edgekd.data.load import as_source
from edgekd.distill.streaming import TrainData
from edgekd.distill.teaching import Teaching
from edgekd.distill.trainer import (
    FitPlan,
    Step,
    build_objective,
    distill,
    fit,
    shard_rows,
    to_tensors,
    train_supervised,
)
from edgekd.tasks import get_task

CFG = TrainConfig(epochs=3, lr=1e-2, batch_size=8, seed=5)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_splits_source_trains_exactly_as_the_plain_loop_over_its_seeded_order() -> None:
    data = image_data()
    model = tiny_net()
    reference = copy.deepcopy(model)
    losses = train_supervised(model, data, CFG)

    splits = data.source.splits  # type: ignore[attr-defined]
    x, y = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)
    torch.manual_seed(CFG.seed)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=CFG.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=CFG.epochs * math.ceil(40 / CFG.batch_size))
    expected = []
    for epoch in range(CFG.epochs):
        reference.train()
        order = np.random.default_rng(CFG.seed + epoch).permutation(40)
        total = 0.0
        for start in range(0, 40, CFG.batch_size):
            rows = torch.from_numpy(order[start:start + CFG.batch_size])
            loss = F.cross_entropy(reference(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(rows)
        expected.append(total / 40)
    assert losses == pytest.approx(expected, rel=1e-6)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_same_seed_gives_the_same_model_and_another_seed_another() -> None:
    augment = build_augment([AugmentSpec(name="random_crop", params={"padding": 1}), AugmentSpec(name="hflip")])
    data = image_data(augment=augment)
    runs = []
    for seed in (5, 5, 6):
        model = tiny_net()
        train_supervised(model, data, CFG.model_copy(update={"seed": seed}))
        runs.append(model)
    assert same_weights(runs[0], runs[1]) and not same_weights(runs[0], runs[2])


def test_a_torch_iterable_dataset_trains_without_being_materialised() -> None:
    streams = {"train": Stream(48), "calib": Stream(8, 1), "test": Stream(8, 2)}
    source = as_source(streams, "a factory returning torch IterableDatasets", shuffle_buffer=6)
    task = get_task("image-classification", **get_task_dims(source))
    seen: list[int] = []
    model = tiny_net()

    def loss_fn(batch: dict[str, torch.Tensor], step: Step) -> torch.Tensor:
        seen.append(len(batch["index"]))
        return task.task_loss(task.forward(model, batch), batch)

    fit(model, TrainData(source, task), FitPlan(2, 1e-2, 8, 0), loss_fn)
    assert seen == [8] * 12  # 48 samples, 8 at a time, 2 epochs: never more than one batch in hand
    # the spec's one-sample probe, one pass to count the samples (no __len__), then the two epochs
    assert streams["train"].pulled <= 1 + 3 * 48


def get_task_dims(source: object) -> dict:
    from edgekd.tasks import task_class

    return task_class("image-classification").dims_from_data(source.spec())  # type: ignore[attr-defined]


def test_mixup_trains_the_teacher_on_both_targets() -> None:
    augment = build_augment([AugmentSpec(name="mixup", params={"alpha": 0.4})])
    data = image_data(augment=augment)
    batches: list[dict[str, torch.Tensor]] = []
    model = tiny_net()
    task = data.task

    def loss_fn(batch: dict[str, torch.Tensor], step: Step) -> torch.Tensor:
        batches.append(batch)
        return task.task_loss(task.forward(model, batch), batch)

    fit(model, data, FitPlan(1, 1e-2, 8, 0), loss_fn)
    assert all({"labels_mix", "mix_lambda"} <= set(b) for b in batches)
    b = batches[0]
    with torch.no_grad():
        logits = model(b["input"])
        lam = b["mix_lambda"]
        expected = lam * F.cross_entropy(logits, b["labels"]) + (1 - lam) * F.cross_entropy(logits, b["labels_mix"])
        torch.testing.assert_close(task.task_loss(logits, b), expected)
    assert not torch.equal(b["labels"], b["labels_mix"])


@pytest.mark.parametrize("rows,batch_size,world", [(11, 4, 1), (11, 4, 2), (11, 4, 3), (12, 4, 4), (64, 64, 2)])
def test_shard_covers_every_row_of_every_global_batch_once(rows: int, batch_size: int, world: int) -> None:
    """fit(shard=(rank, world)) itself: per step, the ranks' rows together are the one-process batch."""
    data = image_data(rows)

    def steps(shard: tuple[int, int]) -> list[list[int]]:
        seen: list[list[int]] = []
        model = nn.Linear(16, 2)

        def loss_fn(batch: dict[str, torch.Tensor], step: Step) -> torch.Tensor:
            seen.append(batch["index"].tolist())
            assert step.global_rows >= len(batch["index"])
            return model(batch["input"].flatten(1)).pow(2).mean()
        fit(model, data, FitPlan(2, 1e-3, batch_size, 7, shard=shard), loss_fn)
        return seen

    single = steps((0, 1))
    per_rank = [steps((rank, world)) for rank in range(world)]
    assert all(len(r) == len(single) == 2 * math.ceil(rows / batch_size) for r in per_rank)
    for step, batch in enumerate(single):
        parts = [r[step] for r in per_rank]
        assert sorted(sum(parts, [])) == sorted(batch)  # every row once, none twice, none missing
        assert all(parts)
    for epoch in range(2):
        per_epoch = single[epoch * len(single) // 2:(epoch + 1) * len(single) // 2]
        assert sorted(sum(per_epoch, [])) == list(range(rows))


def test_shard_rows_keeps_one_lambda_per_batch_whole() -> None:
    batch = to_tensors({"input": np.zeros((5, 2), np.float32), "index": np.arange(5), "mix_lambda": np.float32(0.3)})
    part = shard_rows(batch, 1, 2)
    assert part["index"].tolist() == [1, 3] and part["input"].shape == (2, 2) and float(part["mix_lambda"]) == pytest.approx(0.3)


def test_distill_passes_the_fractional_epoch_to_the_losses() -> None:
    from edgekd.distill.losses import CombinedLoss, DistillLoss, LossInputs

    seen: list[float] = []

    class Recorder(DistillLoss):
        name = "recorder"

        def forward(self, inputs: LossInputs) -> torch.Tensor:
            seen.append(inputs.epoch)
            return F.cross_entropy(inputs.student_logits, inputs.labels)

    distill(tiny_net(), image_data(10), DistillConfig(epochs=2, batch_size=4, lr=1e-3), CombinedLoss([(1.0, Recorder())]), Teaching())
    assert seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3])  # 3 batches of 4, 4, 2 per epoch


def test_distilling_against_the_cached_logits_equals_running_the_teacher(tmp_path) -> None:
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.teachers import TorchTeacher

    data = image_data()
    cfg = DistillConfig(epochs=2, batch_size=8, lr=1e-2)
    teacher = TorchTeacher(tiny_net(1, width=8), None, "teacher", task=data.task)
    cached, _ = cached_teacher_logits(teacher, data.source, tmp_path)
    students = []
    for teaching in (Teaching(teacher), Teaching(teacher, logits=cached)):
        student = tiny_net(2)
        losses = distill(student, data, cfg, build_objective(cfg), teaching)
        students.append((student, losses))
    (online, online_losses), (from_cache, cache_losses) = students
    assert cache_losses == pytest.approx(online_losses, rel=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(online.state_dict().values(), from_cache.state_dict().values()))


def test_count_macs_of_a_task_forward() -> None:
    from edgekd.distill.trainer import count_macs, count_task_macs

    model, task = tiny_net(), image_data().task
    assert count_task_macs(model, lambda m: task.forward(m, task.dummy_inputs(1))) == count_macs(model, SHAPE) == 4 * 9 * 16 + 64 * CLASSES
