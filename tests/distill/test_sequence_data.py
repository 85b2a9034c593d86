"""Sequence-level KD's training rows (edgekd.distill.sequence_data): the teacher's tokens are the
targets, the prompt and the padding are not (-100); real blocks are mixed in by share; calib and
test stay the real source's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekd.data.sources import INDEX, LABELS, SplitsSource
from edgekd.data.splits import Split, Splits
from edgekd.distill.sequence_data import (
    IGNORE_INDEX,
    SequenceSource,
    concatenate,
    real_count,
    rows_of,
)
from edgekd.errors import DataError
from edgekd.tasks.causal_lm import next_token_targets


def generated() -> tuple[np.ndarray, np.ndarray]:
    sequences = np.array([[3, 4, 5, 6, 7, 8], [3, 9, 5, 2, 0, 0]])  # the second ended (eos 2) after 2 new tokens
    return sequences, np.array([6, 4])


def test_prompt_and_padding_are_not_scored_and_the_generated_tokens_are():
    sequences, lengths = generated()
    rows = rows_of(sequences, lengths, np.array([2, 2]), max_length=8, pad_id=0)
    np.testing.assert_array_equal(rows.labels, [[-100, -100, 5, 6, 7, 8, -100, -100], [-100, -100, 5, 2, -100, -100, -100, -100]])
    np.testing.assert_array_equal(rows.attention_mask, [[1] * 6 + [0] * 2, [1] * 4 + [0] * 4])
    keep, targets = next_token_targets(rows.take(np.arange(2)))
    # the task scores position t when token t+1 is a target: from the last prompt position on
    assert keep.tolist() == [[False, True, True, True, True, False, False], [False, True, True, False, False, False, False]]
    assert targets[keep].tolist() == [5, 6, 7, 8, 5, 2]
    with pytest.raises(DataError, match="max_length"):
        rows_of(sequences, lengths, np.array([2, 2]), max_length=5, pad_id=0)


def real_source() -> SplitsSource:
    rng = np.random.default_rng(0)
    split = lambda n: Split(rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, n))
    return SplitsSource(Splits(split(10), split(4), split(6), num_classes=2))


def test_the_source_serves_teacher_rows_for_training_and_the_real_splits_for_the_rest():
    sequences, lengths = generated()
    rows = rows_of(sequences, lengths, np.array([2, 2]), 8, 0)
    base = real_source()
    source = SequenceSource(base, rows, teacher_rows=2, origin="teacher generations")
    train = list(source.batches("train", 8, seed=3))
    assert len(train) == 1 and sorted(train[0][INDEX].tolist()) == [0, 1]
    np.testing.assert_array_equal(train[0][LABELS], rows.labels[train[0][INDEX]])
    assert source.num_samples("train") == 2 and source.num_samples("test") == 6
    np.testing.assert_array_equal(next(source.batches("test", 6))["input"], next(base.batches("test", 6))["input"])
    other = SequenceSource(base, rows_of(sequences, lengths, np.array([1, 1]), 8, 0), 2, "teacher generations")
    assert source.fingerprint() != other.fingerprint() and "2 teacher generations + 0 real" in source.describe()


def test_real_blocks_come_after_the_teacher_rows_by_share():
    assert real_count(30, 0.0, 100) == 0 and real_count(30, 0.25, 100) == 10 and real_count(30, 0.5, 12) == 12
    sequences, lengths = generated()
    teacher = rows_of(sequences, lengths, np.array([2, 2]), 8, 0)
    real = rows_of(np.array([[1, 2, 3, 4, 5, 6, 7, 8]]), np.array([8]), np.array([0]), 8, 0)
    mixed = concatenate(teacher, real)
    assert len(mixed) == 3 and (mixed.labels[2] == real.input_ids[0]).all() and (mixed.labels[2] != IGNORE_INDEX).all()
    assert torch.equal(torch.as_tensor(mixed.input_ids[:2]), torch.as_tensor(teacher.input_ids))
