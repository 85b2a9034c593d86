"""edgekd.tasks.metrics: streaming accuracy and perplexity, exact to the whole-set computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgekd.tasks.metrics import ACCURACY, PERPLEXITY, AccuracyState, PerplexityState


def test_the_metric_specs() -> None:
    assert (ACCURACY.unit, ACCURACY.higher_is_better, ACCURACY.degradation_name) == ("%", True, "accuracy_drop_pt")
    assert (PERPLEXITY.higher_is_better, PERPLEXITY.degradation_name) == (False, "perplexity_increase_pct")


def test_accuracy_is_top1_in_percent_over_every_batch() -> None:
    state = AccuracyState()
    state.update(torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), {"labels": np.array([0, 1, 1])})
    state.update(torch.tensor([[0.0, 1.0]]), {"labels": torch.tensor([1])})
    assert state.count == 4 and state.value() == pytest.approx(75.0)


def test_accuracy_without_labels_has_no_value() -> None:
    state = AccuracyState()
    state.update(torch.zeros(2, 3), {"input": np.zeros((2, 4))})
    assert state.value() is None and state.count == 0
    with pytest.raises(ValueError, match=r"logits \[B, C\]"):
        state.update(torch.zeros(2, 3, 4), {"labels": np.zeros(2)})


def test_accuracy_streams_exactly() -> None:
    rng = np.random.default_rng(0)
    logits = [torch.from_numpy(rng.standard_normal((n, 5)).astype(np.float32)) for n in (3, 7, 1, 4)]
    labels = [rng.integers(0, 5, len(x)) for x in logits]
    state = AccuracyState()
    for x, y in zip(logits, labels):
        state.update(x, {"labels": y})
    everything = torch.cat(logits).argmax(-1).numpy() == np.concatenate(labels)
    assert state.value() == 100.0 * everything.sum() / everything.size


def identity_rows(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return logits, torch.as_tensor(batch["labels"])


def test_perplexity_of_uniform_logits_is_the_vocabulary_size() -> None:
    state = PerplexityState(identity_rows)
    state.update(torch.zeros(6, 17), {"labels": np.arange(6)})
    assert state.value() == pytest.approx(17.0) and state.count == 6


def test_perplexity_streams_exactly_over_batches_of_different_sizes() -> None:
    rng = np.random.default_rng(1)
    logits = [torch.from_numpy(rng.standard_normal((n, 11)).astype(np.float32)) for n in (5, 1, 9)]
    labels = [rng.integers(0, 11, len(x)) for x in logits]
    state = PerplexityState(identity_rows)
    for x, y in zip(logits, labels):
        state.update(x, {"labels": y})
    nll = [-torch.log_softmax(x.double(), -1)[i, y[i]].item() for x, y in zip(logits, labels) for i in range(len(y))]
    assert state.value() == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-12)
    assert PerplexityState(identity_rows).value() is None
