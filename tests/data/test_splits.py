"""edgekd/data.py (Splits, check_splits) and the built-in example's data (edgekd/examples/digits.py load())."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from edgekd.data import Split, Splits, check_splits
from edgekd.errors import DataError

SOURCE = "proj.data:load"


def split(n: int = 4, shape: tuple[int, ...] = (1, 2, 2), classes: int = 3, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.random((n, *shape), dtype=np.float32), (np.arange(n) % classes).astype(np.int64))


def splits(**changes: object) -> Splits:
    base: dict[str, object] = {"train": split(6, seed=1), "calib": split(3, seed=2), "test": split(4, seed=3), "num_classes": 3}
    base.update(changes)
    return Splits(**base)  # type: ignore[arg-type]


def test_valid_splits_are_returned_unchanged() -> None:
    s = splits()
    assert check_splits(s, SOURCE) is s
    assert s.input_shape == (1, 2, 2)
    assert len(s.train) == 6


@pytest.mark.parametrize("value", [None, {"train": 1}, (np.zeros(3), np.zeros(3))])
def test_wrong_type(value: object) -> None:
    with pytest.raises(DataError) as info:
        check_splits(value, SOURCE)
    assert f"{SOURCE} returned {type(value).__name__}, not edgekd.data.Splits" in str(info.value)
    assert "Splits(" in (info.value.hint or "")


@pytest.mark.parametrize("name", ["train", "calib", "test"])
def test_empty_split(name: str) -> None:
    empty = Split(np.zeros((0, 1, 2, 2), np.float32), np.zeros((0,), np.int64))
    with pytest.raises(DataError, match=f"{SOURCE}: split '{name}' is empty"):
        check_splits(splits(**{name: empty}), SOURCE)


@pytest.mark.parametrize(
    ("x_dtype", "y_dtype"),
    [(np.float64, np.int64), (np.float16, np.int64), (np.float32, np.int32), (np.float32, np.float32), (np.uint8, np.int64)],
)
def test_wrong_dtype(x_dtype: type, y_dtype: type) -> None:
    good = split()
    bad = Split(good.x.astype(x_dtype), good.y.astype(y_dtype))
    with pytest.raises(DataError) as info:
        check_splits(splits(calib=bad), SOURCE)
    assert "split 'calib' has x" in str(info.value)
    assert "float32" in (info.value.hint or "") and "int64" in (info.value.hint or "")


@pytest.mark.parametrize("bad_label", [-1, 3, 100])
def test_labels_out_of_range(bad_label: int) -> None:
    s = split()
    y = s.y.copy()
    y[1] = bad_label
    with pytest.raises(DataError, match=r"split 'test' has labels outside 0\.\.2"):
        check_splits(splits(test=Split(s.x, y)), SOURCE)


def test_top_label_is_in_range() -> None:
    s = split()
    y = np.full_like(s.y, 2)
    assert check_splits(splits(test=Split(s.x, y)), SOURCE).test.y.max() == 2


def test_inputs_and_labels_of_different_length() -> None:
    s = split(5)
    with pytest.raises(DataError, match="split 'train' has 5 inputs but 4 labels"):
        check_splits(splits(train=Split(s.x, s.y[:4])), SOURCE)


def test_splits_with_different_input_shapes() -> None:
    with pytest.raises(DataError, match="splits have different input shapes") as info:
        check_splits(splits(calib=split(3, shape=(1, 3, 3))), SOURCE)
    assert "(1, 2, 2)" in str(info.value) and "(1, 3, 3)" in str(info.value)


def test_sha256_is_deterministic_and_changes_with_data() -> None:
    base = splits()
    assert base.sha256() == splits().sha256()
    x = base.test.x.copy()
    x[0, 0, 0, 0] += 1.0
    assert splits(test=Split(x, base.test.y)).sha256() != base.sha256()
    y = base.train.y.copy()
    y[0] = (y[0] + 1) % 3
    assert splits(train=Split(base.train.x, y)).sha256() != base.sha256()


def test_sha256_depends_on_which_split_holds_the_data() -> None:
    base = splits()
    swapped = splits(calib=base.test, test=base.calib)
    assert swapped.sha256() != base.sha256()


def test_sha256_depends_on_shape_and_dtype_not_only_bytes() -> None:
    base = splits()
    reshaped = Split(base.test.x.reshape(4, 1, 4, 1), base.test.y)
    assert splits(test=reshaped).sha256() != base.sha256()


def test_sha256_ignores_memory_layout() -> None:
    base = splits()
    fortran = Split(np.asfortranarray(base.train.x), base.train.y)
    assert splits(train=fortran).sha256() == base.sha256()


# ------------------------------------------------------------------ built-in example data


@pytest.fixture(scope="module")
def digits() -> Splits:
    pytest.importorskip("sklearn")
    from edgekd.examples.digits import load

    return load()


def test_digits_shapes_and_dtypes(digits: Splits) -> None:
    assert check_splits(digits, "edgekd.examples.digits:load") is digits
    assert digits.num_classes == 10
    for s in (digits.train, digits.calib, digits.test):
        assert s.x.ndim == 4 and s.x.shape[1:] == (1, 8, 8)
        assert s.x.dtype == np.float32 and s.y.dtype == np.int64
        assert 0.0 <= s.x.min() and s.x.max() <= 1.0
    assert digits.input_shape == (1, 8, 8)


def test_digits_split_sizes(digits: Splits) -> None:
    sizes = (len(digits.train), len(digits.calib), len(digits.test))
    assert sum(sizes) == 1797
    assert len(digits.test) == pytest.approx(0.2 * 1797, abs=1)
    assert len(digits.calib) == pytest.approx(0.1 * 1797, abs=2)


def test_digits_splits_partition_the_dataset(digits: Splits) -> None:
    from sklearn.datasets import load_digits

    full = load_digits()
    def rows(x: np.ndarray, y: np.ndarray) -> Counter:
        return Counter((xi.tobytes(), int(yi)) for xi, yi in zip(x, y))

    everything = rows((full.images / 16.0).astype(np.float32)[:, None], full.target)
    parts = [rows(s.x, s.y) for s in (digits.train, digits.calib, digits.test)]
    assert parts[0] + parts[1] + parts[2] == everything  # no sample twice, none lost
    assert not set(parts[1]) & set(parts[2])  # calib does not overlap test
    assert not set(parts[1]) & set(parts[0])  # calib is held out of training


def test_digits_splits_are_stratified(digits: Splits) -> None:
    for s in (digits.train, digits.calib, digits.test):
        assert set(np.unique(s.y)) == set(range(10))


def test_digits_seed_changes_split_not_sizes(digits: Splits) -> None:
    from edgekd.examples.digits import load

    again, other = load(seed=0), load(seed=1)
    assert again.sha256() == digits.sha256()
    assert other.sha256() != digits.sha256()
    assert len(other.test) == len(digits.test)
