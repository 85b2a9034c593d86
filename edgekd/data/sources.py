"""Data that streams: a DataSource yields batches of named numpy arrays per split, one batch at a time.

Every batch holds the model inputs by name, "labels" when the split has them, and "index": the int64
positions of its samples within the split (in the split's natural order, whatever the shuffle), so
that on-disk teacher caches can be indexed. Nothing holds a split in memory unless the source itself
is in-memory (SplitsSource wraps today's numpy Splits).

Shuffling (`seed`): map-style sources (random access) draw a seeded permutation of the split's
positions (8 bytes per sample, never the samples); iterable sources pass samples through a seeded
shuffle buffer of `shuffle_buffer` samples. Either way every index appears exactly once per epoch,
and the same seed gives the same order. `seed=None` streams the split in its natural order.

The fingerprint (sha256) is computed once, by streaming, and remembered.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from edgekd.data.splits import Splits
from edgekd.errors import DataError

Batch = dict[str, np.ndarray]
T = TypeVar("T")
SPLITS = ("train", "calib", "test")
INDEX = "index"
LABELS = "labels"
DEFAULT_SHUFFLE_BUFFER = 1024
FINGERPRINT_BATCH = 256  # samples per batch while hashing a source by streaming it (not part of the hash)


class Digest(Protocol):
    """What hash_batches feeds: hashlib's sha256 and friends."""

    def update(self, data: bytes, /) -> None: ...


@dataclass(frozen=True)
class ArraySpec:
    """One named array of every batch: dtype (numpy name) and the shape of one sample."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name} {self.dtype} {'x'.join(map(str, self.shape)) or 'scalar'}"


@dataclass(frozen=True)
class SourceSpec:
    """What a source knows about its data: the model inputs, the labels (None: unlabelled, e.g.
    language modelling, where targets come from input_ids), and sizes when known."""

    inputs: tuple[ArraySpec, ...]
    labels: ArraySpec | None = None
    num_classes: int | None = None
    vocab_size: int | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    def describe(self) -> str:
        parts = [spec.describe() for spec in self.inputs]
        if self.labels is not None:
            parts.append(self.labels.describe())
        if self.num_classes is not None:
            parts.append(f"{self.num_classes} classes")
        if self.vocab_size is not None:
            parts.append(f"vocabulary {self.vocab_size}")
        return ", ".join(parts)


class DataSource(ABC):
    """Batches of named arrays per split ("train", "calib", "test"); see the module docstring."""

    fingerprint_value: str | None = None

    @abstractmethod
    def batches(self, split: str, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        """One epoch of `split`; `seed` shuffles (seeded permutation or shuffle buffer), None keeps order."""

    @abstractmethod
    def num_samples(self, split: str) -> int | None:
        """Samples in `split`; None when a source cannot tell without streaming the split."""

    @abstractmethod
    def spec(self) -> SourceSpec:
        """Names, dtypes and per-sample shapes of the arrays; number of classes and vocabulary when known."""

    @abstractmethod
    def compute_fingerprint(self) -> str:
        """sha256 of everything the batches depend on, by streaming: use fingerprint(), which remembers it."""

    @abstractmethod
    def describe(self) -> str:
        """One line for reports and logs."""

    def fingerprint(self) -> str:
        """sha256 of the data (and the settings that shape it), computed once by streaming."""
        if self.fingerprint_value is None:
            self.fingerprint_value = self.compute_fingerprint()
        return self.fingerprint_value


def check_split(split: str, batch_size: int) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} for split '{split}'", "use a batch size of at least 1")


def sample_order(n: int, seed: int | None) -> np.ndarray:
    """Positions 0..n-1: in order, or a seeded permutation (map-style sources)."""
    if seed is None:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def buffer_shuffle(items: Iterable[T], buffer_size: int, seed: int) -> Iterator[T]:
    """A seeded shuffle buffer (iterable sources): holds at most `buffer_size` items; each item is
    yielded exactly once. Items arrive in order and leave from a random slot of the buffer."""
    if buffer_size < 1:
        raise DataError(f"shuffle buffer of {buffer_size} samples", "use a shuffle buffer of at least 1 sample")
    rng = np.random.default_rng(seed)
    buffer: list[T] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        slot = int(rng.integers(buffer_size))
        yield buffer[slot]
        buffer[slot] = item
    order = rng.permutation(len(buffer))
    for slot in order:
        yield buffer[int(slot)]


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last may be shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def hash_batches(digest: Digest, batches: Iterable[Batch]) -> int:
    """Feed the stream's arrays to `digest` (per name: dtype, per-sample shape and bytes, in stream
    order; not "index"); returns the number of samples. How the stream is cut into batches does not
    change the hash: each name has its own running sha256, combined at the end."""
    count = 0
    per_name: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for batch in batches:
        for name, value in batch.items():
            if name == INDEX:
                continue
            arr = np.ascontiguousarray(value)
            running = per_name.setdefault(name, hashlib.sha256())
            header = f"{arr.dtype}:{arr.shape[1:]};"
            if headers.get(name) != header:
                running.update(header.encode())
                headers[name] = header
            running.update(arr.tobytes())
        count += len(batch[INDEX])
    for name in sorted(per_name):
        digest.update(f"{name}:{per_name[name].hexdigest()};".encode())
    return count


def stream_fingerprint(batches_of: Callable[[str], Iterable[Batch]], settings: str = "") -> str:
    """sha256 over `settings` and every split streamed in natural order."""
    digest = hashlib.sha256(settings.encode())
    for split in SPLITS:
        digest.update(f"split {split};".encode())
        count = hash_batches(digest, batches_of(split))
        digest.update(f"{count} samples;".encode())
    return digest.hexdigest()


def read_split(source: DataSource, split: str, limit: int | None = None, batch_size: int = 256) -> Batch:
    """The first `limit` samples (all without a limit) of a split, in their natural order, as one batch
    of named arrays (labels included, no "index"). For the bounded splits (calibration, test); the
    train split is only ever streamed."""
    parts: dict[str, list[np.ndarray]] = {}
    count = 0
    for batch in source.batches(split, batch_size):
        take = len(batch[INDEX]) if limit is None else min(len(batch[INDEX]), limit - count)
        for name, array in batch.items():
            if name != INDEX:
                parts.setdefault(name, []).append(array[:take])
        count += take
        if limit is not None and count >= limit:
            break
    if not parts:
        raise DataError(f"split '{split}' of {source.describe()} is empty", "every split needs samples")
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


class SplitsSource(DataSource):
    """Today's in-memory `Splits`: input "input" (float32), "labels" (int64) and "index".

    Its fingerprint is `Splits.sha256()`, so caches keyed on it stay valid (the arrays are already in
    memory; hashing them is the same streaming pass)."""

    def __init__(self, splits: Splits) -> None:
        self.splits = splits

    def batches(self, split: str, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        check_split(split, batch_size)
        data = getattr(self.splits, split)
        order = sample_order(len(data), seed)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield {"input": data.x[index], LABELS: data.y[index], INDEX: index}

    def num_samples(self, split: str) -> int:
        check_split(split, 1)
        return len(getattr(self.splits, split))

    def spec(self) -> SourceSpec:
        test = self.splits.test
        return SourceSpec(
            inputs=(ArraySpec("input", str(test.x.dtype), self.splits.input_shape),),
            labels=ArraySpec(LABELS, str(test.y.dtype), ()),
            num_classes=self.splits.num_classes,
        )

    def compute_fingerprint(self) -> str:
        return self.splits.sha256()

    def describe(self) -> str:
        counts = "/".join(str(self.num_samples(split)) for split in SPLITS)
        text = self.splits.description or "in-memory Splits"
        return f"{text} (train/calib/test {counts}; {self.spec().describe()})"
