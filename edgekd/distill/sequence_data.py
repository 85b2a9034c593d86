"""Training rows for sequence-level KD: the teacher's sequences (edgekd's generations or an API
teacher's responses) as causal-lm rows, optionally mixed with real train blocks, served as the train
split of a DataSource whose calib and test splits are the project's real ones (evaluation stays on
real held-out text).

A row is [max_length] "input_ids" (padded with the pad id), "attention_mask" (1 on real tokens) and
"labels": the token where it is a target, -100 (not scored) on the prompt and on padding; a real
block's labels are its tokens. Teacher rows come first (index 0..n-1), then the real blocks.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edgekd.data.sources import (
    INDEX,
    LABELS,
    Batch,
    DataSource,
    SourceSpec,
    check_split,
    sample_order,
)
from edgekd.errors import DataError

IGNORE_INDEX = -100
INPUT_IDS, ATTENTION_MASK = "input_ids", "attention_mask"
TRAIN = "train"


@dataclass(frozen=True)
class Rows:
    """Training rows: [N, L] input_ids, attention_mask, labels (see the module docstring)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def take(self, index: np.ndarray) -> Batch:
        return {INPUT_IDS: self.input_ids[index], ATTENTION_MASK: self.attention_mask[index], LABELS: self.labels[index]}

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for array in (self.input_ids, self.attention_mask, self.labels):
            digest.update(f"{array.shape};".encode())
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return digest.hexdigest()


def rows_of(sequences: np.ndarray, lengths: np.ndarray, scored_from: np.ndarray, max_length: int, pad_id: int) -> Rows:
    """Rows from token sequences [N, <= max_length]: tokens [0, lengths) are real, labels from
    `scored_from` (per row: the first scored position; earlier ones are the prompt) to the length."""
    if sequences.shape[1] > max_length:
        raise DataError(f"teacher sequences of {sequences.shape[1]} tokens exceed the data's max_length {max_length}",
                        "shorten the generations or raise data.max_length")
    count, width = sequences.shape
    ids = np.full((count, max_length), pad_id, dtype=np.int64)
    ids[:, :width] = sequences
    positions = np.arange(max_length)[None]
    real = positions < lengths[:, None]
    ids[~real] = pad_id
    labels = np.where(real & (positions >= scored_from[:, None]), ids, IGNORE_INDEX)
    return Rows(ids, real.astype(np.int64), labels.astype(np.int64))


def real_rows(source: DataSource, count: int, seed: int) -> Rows:
    """`count` train blocks of the real source, a seeded choice without replacement, as scored rows."""
    if count == 0:
        return Rows(*(np.zeros((0, 0), dtype=np.int64) for _ in range(3)))
    chosen: list[np.ndarray] = []
    for batch in source.batches(TRAIN, count, seed=seed):
        chosen.append(np.asarray(batch[INPUT_IDS], dtype=np.int64))
        break
    ids = np.concatenate(chosen)[:count]
    mask = np.ones_like(ids)
    return Rows(ids, mask, ids.copy())


def real_count(teacher_rows: int, fraction: float, available: int) -> int:
    """Real blocks so that they are `fraction` of all rows (at most the `available` ones)."""
    if fraction <= 0:
        return 0
    return min(available, round(teacher_rows * fraction / (1.0 - fraction)))


def concatenate(first: Rows, second: Rows) -> Rows:
    if len(second) == 0:
        return first
    if second.input_ids.shape[1] != first.input_ids.shape[1]:
        raise DataError(f"real blocks of {second.input_ids.shape[1]} tokens beside teacher rows of {first.input_ids.shape[1]}",
                        "the data's blocks and the teacher rows must have the data's max_length")
    return Rows(*(np.concatenate([a, b]) for a, b in ((first.input_ids, second.input_ids),
                                                       (first.attention_mask, second.attention_mask),
                                                       (first.labels, second.labels))))


class SequenceSource(DataSource):
    """The train split from in-memory rows (teacher rows, then real blocks); calib and test from
    `base`. `teacher_rows`: how many of the rows come from the teacher."""

    def __init__(self, base: DataSource, rows: Rows, teacher_rows: int, origin: str) -> None:
        self.base, self.rows, self.teacher_rows, self.origin = base, rows, teacher_rows, origin

    def batches(self, split: str, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        check_split(split, batch_size)
        if split != TRAIN:
            yield from self.base.batches(split, batch_size, seed=seed)
            return
        order = sample_order(len(self.rows), seed)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield {**self.rows.take(index), INDEX: index}

    def num_samples(self, split: str) -> int | None:
        return len(self.rows) if split == TRAIN else self.base.num_samples(split)

    def spec(self) -> SourceSpec:
        return self.base.spec()

    def compute_fingerprint(self) -> str:
        return hashlib.sha256(f"sequence rows;{self.base.fingerprint()};{self.rows.sha256()};{self.teacher_rows}".encode()).hexdigest()

    def describe(self) -> str:
        real = len(self.rows) - self.teacher_rows
        return f"{self.teacher_rows} {self.origin} + {real} real train blocks (train split); calib/test: {self.base.describe()}"
