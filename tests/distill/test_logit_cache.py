"""edgekd/distill/logit_cache.py: the teacher runs once per (teacher, data, k), across calls and builds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.distill.logit_cache import cache_key, cache_path, cached_teacher_logits
from edgekd.distill.logits_file import read_logits_file, softmax
from edgekd.errors import ConfigError, DataError

SHA = "a" * 64


class Counting:
    """A teacher with fixed logits that counts how often it runs."""

    def __init__(self, logits: np.ndarray, name: str = "counting") -> None:
        self._logits, self.name, self.calls = logits.astype(np.float32), name, 0

    def describe(self) -> str:
        return f"counting teacher {self.name}"

    def identity(self) -> dict:
        return {"kind": "test", "name": self.name}

    @property
    def has_features(self) -> bool:
        return False

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self._logits[: len(x)]


@pytest.fixture
def x() -> np.ndarray:
    return np.zeros((20, 3), np.float32)


@pytest.fixture
def teacher() -> Counting:
    return Counting(np.random.default_rng(0).standard_normal((20, 6)) * 3)


@pytest.mark.parametrize("k", [None, 3, 6])
def test_miss_then_hit_returns_the_same_logits(tmp_path: Path, teacher: Counting, x: np.ndarray, k: int | None) -> None:
    first, hit1 = cached_teacher_logits(teacher, x, tmp_path, SHA, k)
    second, hit2 = cached_teacher_logits(teacher, x, tmp_path, SHA, k)
    assert (hit1, hit2) == (False, True) and teacher.calls == 1
    assert first.dtype == second.dtype == np.float32 and first.shape == (20, 6)
    np.testing.assert_array_equal(first, second)  # a cold and a warm build distill against the same targets
    if k is None:
        np.testing.assert_array_equal(first, teacher._logits)  # full logits are kept exactly
    else:
        np.testing.assert_allclose(softmax(first).max(axis=1), softmax(teacher._logits).max(axis=1), rtol=1e-5)


def test_a_new_teacher_instance_with_the_same_identity_hits(tmp_path: Path, teacher: Counting, x: np.ndarray) -> None:
    cached_teacher_logits(teacher, x, tmp_path, SHA, 3)
    again = Counting(teacher._logits)  # e.g. the next build
    assert cached_teacher_logits(again, x, tmp_path, SHA, 3)[1] and again.calls == 0


@pytest.mark.parametrize("change", ["teacher", "data", "k", "samples"])
def test_any_change_of_the_key_is_a_miss(tmp_path: Path, teacher: Counting, x: np.ndarray, change: str) -> None:
    cached_teacher_logits(teacher, x, tmp_path, SHA, 3)
    other_teacher = Counting(teacher._logits, "retrained") if change == "teacher" else teacher
    sha = "b" * 64 if change == "data" else SHA
    k = 4 if change == "k" else 3
    rows = x[:10] if change == "samples" else x
    before = other_teacher.calls
    _, hit = cached_teacher_logits(other_teacher, rows, tmp_path, sha, k)
    assert not hit and other_teacher.calls == before + 1


def test_torch_teacher_identity_changes_with_its_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from edgekd.distill.teachers import TorchTeacher

    torch.manual_seed(0)
    module = torch.nn.Linear(3, 4)
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    assert not cached_teacher_logits(TorchTeacher(module, None, "linear"), x, tmp_path, SHA, None)[1]
    assert cached_teacher_logits(TorchTeacher(module, None, "linear"), x, tmp_path, SHA, None)[1]
    with torch.no_grad():
        module.weight.add_(0.1)  # the teacher was trained further
    logits, hit = cached_teacher_logits(TorchTeacher(module, None, "linear"), x, tmp_path, SHA, None)
    assert not hit
    with torch.no_grad():
        np.testing.assert_allclose(logits, module(torch.from_numpy(x)).numpy(), atol=1e-6)


def test_entries_are_pickle_free_files(tmp_path: Path, teacher: Counting, x: np.ndarray) -> None:
    cached_teacher_logits(teacher, x, tmp_path, SHA, None)
    cached_teacher_logits(teacher, x, tmp_path, SHA, 3)
    full = cache_path(tmp_path, cache_key(teacher, SHA, 20, None), None)
    top = cache_path(tmp_path, cache_key(teacher, SHA, 20, 3), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([full.name, top.name])  # no temp files left
    np.testing.assert_array_equal(np.load(full, allow_pickle=False), teacher._logits)
    contents = read_logits_file(top)
    assert contents.k == 3 and contents.data_sha256 == SHA and contents.producer == "counting teacher counting"


@pytest.mark.parametrize("k", [None, 3])
def test_an_unreadable_entry_is_a_miss_and_is_replaced(tmp_path: Path, teacher: Counting, x: np.ndarray, k: int | None) -> None:
    first, _ = cached_teacher_logits(teacher, x, tmp_path, SHA, k)
    cache_path(tmp_path, cache_key(teacher, SHA, 20, k), k).write_bytes(b"truncated")
    again, hit = cached_teacher_logits(teacher, x, tmp_path, SHA, k)
    assert not hit and teacher.calls == 2
    np.testing.assert_array_equal(again, first)
    assert cached_teacher_logits(teacher, x, tmp_path, SHA, k)[1]


def test_bad_k_and_bad_logits(tmp_path: Path, teacher: Counting, x: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="top-k = 0"):
        cached_teacher_logits(teacher, x, tmp_path, SHA, 0)
    with pytest.raises(ConfigError, match="top-k = 7 but counting teacher counting gives 6 classes"):
        cached_teacher_logits(teacher, x, tmp_path, SHA, 7)
    broken = Counting(np.full((20, 6), np.nan))
    with pytest.raises(DataError, match="non-finite"):
        cached_teacher_logits(broken, x, tmp_path, SHA, None)
    assert list(tmp_path.iterdir()) == []
