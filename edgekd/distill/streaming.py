"""What training and the teacher caches share about streamed batches (edgekd.data.sources): which
keys are not model inputs, a batch's rows, the train split's size and content hash, and writing
per-sample outputs of a streamed split into memory-mapped `.npy` files at the rows batch["index"]
names. numpy only: torch is imported by the modules that train.
"""
from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.common.npy_files import check_npy
from edgekd.data.sources import INDEX, LABELS, DataSource, SplitsSource, hash_batches
from edgekd.errors import DataError

if TYPE_CHECKING:
    from edgekd.data.augment import Augment
    from edgekd.tasks.base import Task

LABELS_MIX = "labels_mix"  # added by mixup (edgekd.data.augment)
MIX_LAMBDA = "mix_lambda"
NOT_INPUTS = frozenset({LABELS, INDEX, LABELS_MIX, MIX_LAMBDA})
TRAIN = "train"
TEACHER_BATCH = 256  # samples per teacher run while a cache is filled (not part of any cache key)

Produce = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class TrainData:
    """What a model trains on: the source's train split, how a batch goes through a model (the task),
    and the training-time augmentation (None: every epoch sees the samples as they are)."""

    source: DataSource
    task: Task
    augment: Augment | None = None


def model_arrays(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch's model inputs (everything but labels, index and mixup's extras), in batch order."""
    return {name: value for name, value in batch.items() if name not in NOT_INPUTS}


def rows_of(batch: Mapping[str, Any]) -> int:
    """How many samples a batch holds (its "index", else its first model input)."""
    first = batch[INDEX] if INDEX in batch else next(iter(model_arrays(batch).values()))
    return len(first)


def count_samples(source: DataSource, split: str = TRAIN) -> int:
    """Samples in `split`: the source's num_samples, else counted by streaming the split once."""
    known = source.num_samples(split)
    if known is not None:
        return int(known)
    return sum(rows_of(batch) for batch in source.batches(split, TEACHER_BATCH))


TRAIN_SHA256: weakref.WeakKeyDictionary[DataSource, str] = weakref.WeakKeyDictionary()  # per source, once


def train_split_sha256(source: DataSource) -> str:
    """The train split's content hash, what logits files are tied to: `Split.sha256()` of an in-memory
    Splits (as `edgekd logits` writes it), else sha256 of the split streamed in natural order
    (edgekd.data.sources.hash_batches). Computed once per source."""
    if source not in TRAIN_SHA256:
        if isinstance(source, SplitsSource):
            TRAIN_SHA256[source] = source.splits.train.sha256()
        else:
            digest = hashlib.sha256(b"train split;")
            count = hash_batches(digest, source.batches(TRAIN, TEACHER_BATCH))
            digest.update(f"{count} samples;".encode())
            TRAIN_SHA256[source] = digest.hexdigest()
    return TRAIN_SHA256[source]


def first_batch(source: DataSource, rows: int, seed: int | None = None) -> dict[str, np.ndarray]:
    """The first `rows` samples of the train split (natural order, or the seeded epoch order)."""
    batch = next(iter(source.batches(TRAIN, rows, seed=seed)), None)
    if batch is None:
        raise DataError(f"the train split of {source.describe()} is empty", "every split needs samples")
    return batch


def write_rows(source: DataSource, produce: Produce, targets: Mapping[str, Path], rows: int,
               batch_size: int = TEACHER_BATCH) -> None:
    """Stream the train split in natural order; `produce(batch)` gives {name: [B, ...] array} and row
    i of `targets[name]` (a float32 `.npy` made with np.lib.format.open_memmap on the first batch)
    receives sample i's output, i = batch["index"]. Nothing but one batch is held in memory. A source
    that yields other than `rows` samples is a DataError. Not atomic: write into temporary paths."""
    files: dict[str, np.memmap] = {}
    seen = 0
    try:
        for batch in source.batches(TRAIN, batch_size):
            index = np.asarray(batch[INDEX], dtype=np.int64)
            if index.size and (index.min() < 0 or index.max() >= rows):
                raise DataError(f"{source.describe()}: train sample positions go past the {rows} samples it reported",
                                "the source must report num_samples for the split it streams")
            for name, values in produce(batch).items():
                if name not in files:
                    files[name] = np.lib.format.open_memmap(targets[name], mode="w+", dtype=np.float32,
                                                            shape=(rows, *values.shape[1:]))
                files[name][index] = values
            seen += len(index)
        if seen != rows:
            raise DataError(f"{source.describe()}: streamed {seen} train samples, expected {rows}",
                            "an iterable source must yield the same samples on every pass")
        for memmap in files.values():
            memmap.flush()
    finally:
        files.clear()  # the memmaps close when their last reference goes


def open_rows(path: Path, rows: int) -> np.ndarray | None:
    """A cache `.npy` memory-mapped read-only (np.memmap), or None when it is unusable: unreadable,
    truncated or longer than its header says, not float32, or not one row per sample."""
    try:
        check_npy(path)
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, DataError):
        return None
    if array.dtype != np.float32 or array.ndim < 2 or array.shape[0] != rows:
        return None
    return array
