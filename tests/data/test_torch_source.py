"""edgekd/data/torch_source.py: map-style and iterable torch datasets streamed as named numpy batches."""
from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

from edgekd.data.sources import SPLITS
from edgekd.data.torch_source import TorchSource
from edgekd.errors import DataError


def tensors(n: int, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, 3, 4, generator=g), torch.randint(0, 5, (n,), generator=g))


class Tokens(Dataset):
    """Map-style dict samples; counts __getitem__ calls."""

    classes = ("a", "b", "c")

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, object]:
        self.calls += 1
        return {"input_ids": torch.full((6,), i, dtype=torch.int64), "attention_mask": np.ones(6, np.int64), "labels": i % 3}


class Counter(IterableDataset):
    """n samples (x = [i, i], y = i % 4) made on the fly; counts how many were pulled."""

    def __init__(self, n: int) -> None:
        self.n, self.pulled = n, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for i in range(self.n):
            self.pulled += 1
            yield torch.tensor([i, i], dtype=torch.float32), i % 4


def all_of(source: TorchSource, split: str, batch_size: int, seed: int | None = None) -> dict[str, np.ndarray]:
    batches = list(source.batches(split, batch_size, seed=seed))
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def test_map_style_tuples() -> None:
    data = {"train": tensors(50), "calib": tensors(10, 1), "test": tensors(20, 2)}
    source = TorchSource(data)
    first = next(source.batches("train", 16))
    assert set(first) == {"input", "labels", "index"}
    assert (first["input"].dtype, first["input"].shape) == (np.float32, (16, 3, 4))
    assert (first["labels"].dtype, first["labels"].shape) == (np.int64, (16,))
    out = all_of(source, "test", 16)
    np.testing.assert_array_equal(out["input"], data["test"].tensors[0].numpy())
    np.testing.assert_array_equal(out["index"], np.arange(20))
    assert [source.num_samples(split) for split in SPLITS] == [50, 10, 20]
    spec = source.spec()
    assert spec.input_names == ("input",) and spec.inputs[0].shape == (3, 4) and spec.labels is not None
    assert "map-style" in source.describe() and "50/10/20" in source.describe()


def test_map_style_dicts_and_num_classes_from_classes() -> None:
    source = TorchSource({"train": Tokens(9), "calib": Tokens(3), "test": Tokens(4)})
    batch = next(source.batches("train", 4))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "index"}
    assert batch["input_ids"].shape == (4, 6) and batch["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(batch["labels"], [0, 1, 2, 0])
    spec = source.spec()
    assert spec.input_names == ("input_ids", "attention_mask") and spec.num_classes == 3


def test_map_style_seeded_shuffle() -> None:
    source = TorchSource({"train": tensors(100), "calib": tensors(5), "test": tensors(5)})
    a, b, c = (all_of(source, "train", 32, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a["index"], b["index"])
    assert not np.array_equal(a["index"], c["index"]) and sorted(a["index"].tolist()) == list(range(100))
    np.testing.assert_array_equal(a["input"], source.datasets["train"].tensors[0].numpy()[a["index"]])  # type: ignore[attr-defined]


def test_iterable_dataset_streams_and_counts_once_exhausted() -> None:
    source = TorchSource({"train": Counter(37), "calib": Counter(5), "test": Counter(6)})
    assert source.num_samples("train") is None
    out = all_of(source, "train", 8)
    np.testing.assert_array_equal(out["index"], np.arange(37))
    np.testing.assert_array_equal(out["input"][:, 0], np.arange(37, dtype=np.float32))
    assert source.num_samples("train") == 37
    shuffled = [all_of(source, "train", 8, seed=s)["index"] for s in (1, 1, 2)]
    np.testing.assert_array_equal(shuffled[0], shuffled[1])
    assert not np.array_equal(shuffled[0], shuffled[2]) and sorted(shuffled[0].tolist()) == list(range(37))
    assert "iterable" in source.describe()


def test_first_batch_pulls_one_batch_not_the_split() -> None:
    train = Counter(10**6)
    source = TorchSource({"train": train, "calib": Counter(5), "test": Counter(5)}, shuffle_buffer=64)
    batch = next(source.batches("train", 32))
    assert batch["input"].shape == (32, 2) and train.pulled == 32
    train.pulled = 0
    next(source.batches("train", 32, seed=0))
    assert train.pulled <= 64 + 32  # the shuffle buffer plus one batch
    tokens = Tokens(10**6)
    map_source = TorchSource({"train": tokens, "calib": Tokens(2), "test": Tokens(2)})
    list(islice(map_source.batches("train", 16, seed=5), 1))
    assert tokens.calls == 16


def test_fingerprint_streams_and_tracks_content() -> None:
    def make(bump: bool = False) -> TorchSource:
        test = tensors(20, 2)
        if bump:
            test.tensors[0][7, 1, 2] += 1e-3
        return TorchSource({"train": tensors(50), "calib": tensors(10, 1), "test": test})

    base = make().fingerprint()
    assert len(base) == 64 and base == make().fingerprint()
    assert make(bump=True).fingerprint() != base
    iterable = TorchSource({"train": Counter(40), "calib": Counter(5), "test": Counter(6)})
    assert iterable.fingerprint() == TorchSource({"train": Counter(40), "calib": Counter(5), "test": Counter(6)}).fingerprint()
    assert iterable.fingerprint() != TorchSource({"train": Counter(41), "calib": Counter(5), "test": Counter(6)}).fingerprint()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([tensors(3)] * 3, "returned list, not a mapping of torch datasets"),
        ({"train": tensors(3), "test": tensors(3)}, "missing ['calib']"),
        ({"train": tensors(3), "calib": tensors(3), "test": tensors(3), "val": tensors(3)}, "unknown ['val']"),
        ({"train": tensors(3), "calib": [1, 2], "test": tensors(3)}, "split 'calib' is a list, not a torch Dataset"),
        ({"train": tensors(3), "calib": tensors(0), "test": tensors(3)}, "split 'calib' is empty"),
    ],
)
def test_wrong_mappings(value: object, message: str) -> None:
    with pytest.raises(DataError, match="^proj.data:load") as info:
        TorchSource(value, source="proj.data:load")  # type: ignore[arg-type]
    assert message in str(info.value)


class Bad(Dataset):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> object:
        if self.kind == "string":
            return "some text", 1
        if self.kind == "index":
            return {"x": torch.zeros(2), "index": i}
        if self.kind == "ragged":
            return torch.zeros(2 + i), 1
        return (torch.zeros(2),) * 3


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("string", "split 'train' sample 0 x is a str, not a tensor"),
        ("index", "has a field named 'index'"),
        ("ragged", "split 'train' sample 1 'input' has shape (3,), sample 0 (2,)"),
        ("triple", "is a tuple of 3 items"),
    ],
)
def test_samples_edgekd_cannot_collate(kind: str, message: str) -> None:
    source = TorchSource({"train": Bad(kind), "calib": tensors(2), "test": tensors(2)})
    with pytest.raises(DataError) as info:
        next(source.batches("train", 4))
    assert message in str(info.value)
