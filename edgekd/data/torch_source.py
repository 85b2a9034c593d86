"""Torch datasets as a DataSource: a factory returns {"train": ..., "calib": ..., "test": ...} of
map-style `Dataset`s or `IterableDataset`s.

A sample is an `(x, y)` tuple (inputs "input", "labels"), a 1-tuple or a bare tensor/array ("input",
unlabelled), or a dict of named tensors/arrays/numbers (a "labels" entry is the labels). Samples are
pulled one at a time by plain iteration (map-style: `dataset[i]`; iterable: `iter(dataset)`) and
collated per batch into named numpy arrays, so a split is never materialised. Map-style splits are
shuffled by a seeded permutation of positions, iterable ones by a seeded shuffle buffer.
An iterable dataset must yield the same samples in the same order on every pass (the fingerprint
and "index" rely on it).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from edgekd.data.sources import (
    DEFAULT_SHUFFLE_BUFFER,
    FINGERPRINT_BATCH,
    INDEX,
    LABELS,
    SPLITS,
    ArraySpec,
    Batch,
    DataSource,
    SourceSpec,
    buffer_shuffle,
    check_split,
    chunks,
    sample_order,
    stream_fingerprint,
)
from edgekd.errors import DataError

Sample = dict[str, np.ndarray]
FORMS_HINT = "return (x, y) tuples or dicts of named tensors/arrays from the dataset (transform inside it)"


def to_array(value: object, where: str) -> np.ndarray:
    """A tensor, array or number as a numpy array; anything else is a DataError naming `where`."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bool, int, float, np.generic)):
        return np.asarray(value)
    raise DataError(f"{where} is a {type(value).__name__}, not a tensor, array or number", FORMS_HINT)


def named_arrays(sample: object, where: str) -> Sample:
    """One sample as named arrays (see the module docstring for the forms accepted)."""
    if isinstance(sample, Mapping):
        if INDEX in sample:
            raise DataError(f"{where} has a field named '{INDEX}'", f"rename it: '{INDEX}' is the sample position edgekd adds")
        bad = [key for key in sample if not isinstance(key, str)]
        if bad:
            raise DataError(f"{where} has non-string field names {bad!r}", "name every field with a string")
        return {key: to_array(value, f"{where} field '{key}'") for key, value in sample.items()}
    if isinstance(sample, (tuple, list)):
        if len(sample) == 2:
            return {"input": to_array(sample[0], f"{where} x"), LABELS: to_array(sample[1], f"{where} y")}
        if len(sample) == 1:
            return {"input": to_array(sample[0], f"{where} x")}
        raise DataError(f"{where} is a {type(sample).__name__} of {len(sample)} items", FORMS_HINT)
    return {"input": to_array(sample, where)}


def collate(samples: list[tuple[int, Sample]], split: str) -> Batch:
    """Stack one batch of named samples; every sample needs the same names and per-name shapes."""
    first_index, first = samples[0]
    for index, sample in samples[1:]:
        if sample.keys() != first.keys():
            raise DataError(f"split '{split}' sample {index} has fields {sorted(sample)}, sample {first_index} {sorted(first)}",
                            "give every sample the same fields")
        for name, arr in sample.items():
            if arr.shape != first[name].shape:
                raise DataError(f"split '{split}' sample {index} '{name}' has shape {arr.shape}, sample {first_index} {first[name].shape}",
                                "pad or resize samples to one shape inside the dataset")
    batch = {name: np.stack([sample[name] for _, sample in samples]) for name in first}
    batch[INDEX] = np.asarray([index for index, _ in samples], dtype=np.int64)
    return batch


def int_attribute(obj: object, name: str) -> int | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_datasets(datasets: object, source: str) -> dict[str, Dataset]:
    """The {train, calib, test} mapping a factory returned, each a torch Dataset; errors name `source`."""
    hint = "return {'train': Dataset, 'calib': Dataset, 'test': Dataset} (torch map-style or IterableDataset)"
    if not isinstance(datasets, Mapping):
        raise DataError(f"{source} returned {type(datasets).__name__}, not a mapping of torch datasets", hint)
    keys = set(datasets)
    if keys != set(SPLITS):
        missing, extra = sorted(set(SPLITS) - keys), sorted(map(str, keys - set(SPLITS)))
        raise DataError(f"{source} returned splits {sorted(map(str, keys))} (missing {missing}, unknown {extra})", hint)
    for split in SPLITS:
        value = datasets[split]
        if not isinstance(value, Dataset):
            raise DataError(f"{source}: split '{split}' is a {type(value).__name__}, not a torch Dataset", hint)
        if not isinstance(value, IterableDataset) and not hasattr(value, "__len__"):
            raise DataError(f"{source}: split '{split}' is a map-style Dataset without __len__", "define __len__ or make it an IterableDataset")
    return {split: datasets[split] for split in SPLITS}


class TorchSource(DataSource):
    """Map-style or iterable torch datasets per split; see the module docstring."""

    def __init__(self, datasets: Mapping[str, Any], source: str = "torch datasets", shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER) -> None:
        self.datasets = check_datasets(datasets, source)
        self.source = source
        self.shuffle_buffer = shuffle_buffer
        self.counted: dict[str, int] = {}
        self.spec_value: SourceSpec | None = None
        for split in SPLITS:
            if self.num_samples(split) == 0:
                raise DataError(f"{source}: split '{split}' is empty", "every split needs samples")

    def is_iterable(self, split: str) -> bool:
        return isinstance(self.datasets[split], IterableDataset)

    def indexed_samples(self, split: str, seed: int | None) -> Iterator[tuple[int, Sample]]:
        """(position, named arrays) pairs of one epoch, in order or shuffled by `seed`."""
        dataset = self.datasets[split]
        if not self.is_iterable(split):
            for index in sample_order(len(dataset), seed):  # type: ignore[arg-type]
                yield int(index), named_arrays(dataset[int(index)], f"split '{split}' sample {int(index)}")
            return
        items: Iterator[tuple[int, object]] = enumerate(iter(dataset))
        if seed is not None:
            items = buffer_shuffle(items, self.shuffle_buffer, seed)
        count = 0
        for index, sample in items:
            count += 1
            yield index, named_arrays(sample, f"split '{split}' sample {index}")
        self.counted[split] = count

    def batches(self, split: str, batch_size: int, *, seed: int | None = None) -> Iterator[Batch]:
        check_split(split, batch_size)
        for samples in chunks(self.indexed_samples(split, seed), batch_size):
            yield collate(samples, split)

    def num_samples(self, split: str) -> int | None:
        """len() of the dataset; an iterable without __len__: its count once a full pass has run, else None."""
        check_split(split, 1)
        try:
            return len(self.datasets[split])  # type: ignore[arg-type]
        except TypeError:
            return self.counted.get(split)

    def spec(self) -> SourceSpec:
        """From the train split's first sample; `classes` / `num_classes` / `vocab_size` attributes of
        the train dataset give the sizes when it has them."""
        if self.spec_value is None:
            first = next(islice(self.indexed_samples("train", None), 1), None)
            if first is None:
                raise DataError(f"{self.source}: split 'train' is empty", "every split needs samples")
            sample = first[1]
            arrays = {name: ArraySpec(name, str(arr.dtype), tuple(arr.shape)) for name, arr in sample.items()}
            labels = arrays.pop(LABELS, None)
            train = self.datasets["train"]
            classes = getattr(train, "classes", None)
            num_classes = len(classes) if isinstance(classes, (list, tuple)) else int_attribute(train, "num_classes")
            self.spec_value = SourceSpec(tuple(arrays.values()), labels, num_classes, int_attribute(train, "vocab_size"))
        return self.spec_value

    def compute_fingerprint(self) -> str:
        return stream_fingerprint(lambda split: self.batches(split, FINGERPRINT_BATCH), "torch datasets;")

    def describe(self) -> str:
        counts = "/".join(str(self.num_samples(split) or "?") for split in SPLITS)
        kinds = "/".join("iterable" if self.is_iterable(split) else "map-style" for split in SPLITS)
        return f"{self.source}: torch {kinds} datasets (train/calib/test {counts}; {self.spec().describe()})"
