"""edgekd/data/sources.py: SplitsSource on scikit-learn's digits, seeded shuffles, streamed hashing."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from edgekd.data.sources import (
    SPLITS,
    SplitsSource,
    buffer_shuffle,
    chunks,
    hash_batches,
    sample_order,
)
from edgekd.data.splits import Split, Splits
from edgekd.errors import DataError
from edgekd.examples.digits import load


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load()


def test_batches_carry_input_labels_and_index(digits: Splits) -> None:
    source = SplitsSource(digits)
    batches = list(source.batches("train", 100))
    assert all(set(batch) == {"input", "labels", "index"} for batch in batches)
    first, last = batches[0], batches[-1]
    assert first["input"].dtype == np.float32 and first["input"].shape == (100, 1, 8, 8)
    assert first["labels"].dtype == np.int64 and first["labels"].shape == (100,)
    assert first["index"].dtype == np.int64 and list(first["index"][:3]) == [0, 1, 2]
    assert len(last["index"]) == len(digits.train) % 100 or len(last["index"]) == 100
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), digits.train.x)
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in batches]), digits.train.y)


def test_counts_spec_and_description(digits: Splits) -> None:
    source = SplitsSource(digits)
    assert [source.num_samples(split) for split in SPLITS] == [len(digits.train), len(digits.calib), len(digits.test)]
    spec = source.spec()
    assert spec.input_names == ("input",)
    assert (spec.inputs[0].dtype, spec.inputs[0].shape) == ("float32", (1, 8, 8))
    assert spec.labels is not None and spec.labels.dtype == "int64" and spec.num_classes == 10 and spec.vocab_size is None
    text = source.describe()
    assert "load_digits" in text and f"{len(digits.train)}/{len(digits.calib)}/{len(digits.test)}" in text and "10 classes" in text


def test_fingerprint_is_splits_sha256_and_remembered(digits: Splits) -> None:
    class Counting(SplitsSource):
        calls = 0

        def compute_fingerprint(self) -> str:
            Counting.calls += 1
            return super().compute_fingerprint()

    source = Counting(digits)
    assert source.fingerprint() == digits.sha256() == source.fingerprint()
    assert Counting.calls == 1
    changed_x = digits.test.x.copy()
    changed_x[0, 0, 0, 0] += 1.0 / 16
    changed = replace(digits, test=Split(changed_x, digits.test.y))
    assert SplitsSource(changed).fingerprint() != source.fingerprint()


def test_seeded_shuffle_is_reproducible_and_covers_every_index_once(digits: Splits) -> None:
    source = SplitsSource(digits)

    def order(seed: int | None) -> np.ndarray:
        return np.concatenate([batch["index"] for batch in source.batches("calib", 32, seed=seed)])

    a, b, other = order(7), order(7), order(8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, other) and not np.array_equal(a, np.arange(len(a)))
    assert sorted(a.tolist()) == list(range(len(digits.calib)))
    for batch in source.batches("calib", 32, seed=7):  # samples travel with their index
        np.testing.assert_array_equal(batch["input"], digits.calib.x[batch["index"]])
        np.testing.assert_array_equal(batch["labels"], digits.calib.y[batch["index"]])


def test_unknown_split_and_bad_batch_size(digits: Splits) -> None:
    source = SplitsSource(digits)
    with pytest.raises(DataError, match="unknown split 'validation'") as info:
        next(source.batches("validation", 8))
    assert "train, calib, test" in (info.value.hint or "")
    with pytest.raises(DataError, match="batch size 0"):
        next(source.batches("train", 0))


def test_sample_order() -> None:
    np.testing.assert_array_equal(sample_order(5, None), np.arange(5))
    assert sorted(sample_order(1000, 3).tolist()) == list(range(1000))
    np.testing.assert_array_equal(sample_order(1000, 3), sample_order(1000, 3))


def test_buffer_shuffle_is_seeded_bounded_and_complete() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(500):
            pulled += 1
            yield i

    stream = buffer_shuffle(items(), 16, seed=1)
    next(stream)
    assert pulled == 17  # the buffer fills, then one item leaves as the next arrives
    rest = list(stream)
    out = list(buffer_shuffle(range(500), 16, seed=1))
    assert sorted(out) == list(range(500)) and len(rest) == 499
    assert out == list(buffer_shuffle(range(500), 16, seed=1)) != list(buffer_shuffle(range(500), 16, seed=2))
    assert out != list(range(500))
    assert sorted(buffer_shuffle(range(5), 16, seed=0)) == list(range(5))  # fewer items than the buffer
    with pytest.raises(DataError, match="shuffle buffer of 0"):
        next(buffer_shuffle(range(5), 0, seed=0))


def test_chunks() -> None:
    assert list(chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []


def test_hash_batches_does_not_depend_on_batch_size(digits: Splits) -> None:
    source = SplitsSource(digits)

    def digest(batch_size: int) -> str:
        h = hashlib.sha256()
        assert hash_batches(h, source.batches("test", batch_size)) == len(digits.test)
        return h.hexdigest()

    assert digest(7) == digest(64) == digest(1000)
