"""edgekd/tasks/classification.py: cross-entropy on the labels, and with mixup's extras
("labels_mix", "mix_lambda" from edgekd.data.augment) the mix of both targets."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgekd.data import augment
from edgekd.errors import DataError
from edgekd.tasks import get_task
from edgekd.tasks.classification import LABELS_MIX, MIX_LAMBDA, mixed_cross_entropy

TASK = get_task("image-classification", input_shape=(1, 2, 2), num_classes=4)


def batch(**extra: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input": torch.zeros(5, 1, 2, 2), "labels": torch.tensor([0, 1, 2, 3, 0]), **extra}


def test_the_names_are_mixups_own() -> None:
    assert (LABELS_MIX, MIX_LAMBDA) == (augment.LABELS_MIX, augment.MIX_LAMBDA)


def test_an_unmixed_batch_is_plain_cross_entropy() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(TASK.task_loss(logits, batch()), F.cross_entropy(logits, batch()["labels"]))


def test_one_lambda_mixes_the_two_mean_losses() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    mix = torch.tensor([3, 3, 1, 0, 2])
    b = batch(labels_mix=mix, mix_lambda=torch.tensor(0.3))
    expected = 0.3 * F.cross_entropy(logits, b["labels"]) + 0.7 * F.cross_entropy(logits, mix)
    torch.testing.assert_close(TASK.task_loss(logits, b), expected)


def test_one_lambda_per_sample_weighs_each_sample() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    mix, lam = torch.tensor([1, 2, 3, 0, 1]), torch.tensor([0.0, 1.0, 0.5, 0.25, 0.9])
    per = [lam[i] * F.cross_entropy(logits[i:i + 1], batch()["labels"][i:i + 1]) + (1 - lam[i]) * F.cross_entropy(logits[i:i + 1], mix[i:i + 1])
           for i in range(5)]
    torch.testing.assert_close(mixed_cross_entropy(logits, batch()["labels"], mix, lam), torch.stack(per).mean())
    torch.testing.assert_close(TASK.task_loss(logits, batch(labels_mix=mix, mix_lambda=lam)), torch.stack(per).mean())


def test_mixed_labels_without_their_weight_are_a_data_error() -> None:
    with pytest.raises(DataError, match="has 'labels_mix' but no 'mix_lambda'"):
        TASK.task_loss(torch.zeros(5, 4), batch(labels_mix=torch.zeros(5, dtype=torch.int64)))
