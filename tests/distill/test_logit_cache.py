"""edgekd/distill/logit_cache.py: the teacher runs once per (teacher, data, k), streamed over the train
split, across calls and builds; full logits are a memory-mapped `.npy`, row i = sample i."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from distill_data import TinyLM, TokenBlocks, image_data, tiny_net

from edgekd.data import Split, Splits
from edgekd.data.load import as_source
from edgekd.data.sources import SplitsSource
from edgekd.distill.logit_cache import cache_key, cache_path, cached_teacher_logits
from edgekd.distill.logits_file import read_logits_file, softmax
from edgekd.distill.teachers import TorchTeacher
from edgekd.errors import ConfigError, DataError

ROWS = 20


class Counting:
    """A teacher with fixed logits per sample position that counts how often it runs."""

    def __init__(self, logits: np.ndarray, name: str = "counting") -> None:
        self._logits, self.name, self.calls = logits.astype(np.float32), name, 0

    def describe(self) -> str:
        return f"counting teacher {self.name}"

    def identity(self) -> dict:
        return {"kind": "test", "name": self.name}

    @property
    def has_features(self) -> bool:
        return False

    @property
    def reads_inputs(self) -> bool:
        return False

    def logits(self, batch: dict) -> np.ndarray:
        self.calls += 1
        return self._logits[batch["index"]]


def source(rows: int = ROWS, seed: int = 0) -> SplitsSource:
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        return Split(rng.standard_normal((n, 3)).astype(np.float32), rng.integers(0, 6, n).astype(np.int64))

    return SplitsSource(Splits(split(rows), split(4), split(4), 6))


@pytest.fixture
def teacher() -> Counting:
    return Counting(np.random.default_rng(0).standard_normal((ROWS, 6)) * 3)


@pytest.mark.parametrize("k", [None, 3, 6])
def test_miss_then_hit_returns_the_same_logits(tmp_path: Path, teacher: Counting, k: int | None) -> None:
    data = source()
    first, hit1 = cached_teacher_logits(teacher, data, tmp_path, k, batch_size=8)
    calls = teacher.calls
    second, hit2 = cached_teacher_logits(teacher, data, tmp_path, k)
    assert (hit1, hit2) == (False, True) and calls == 3 and teacher.calls == 3  # one streamed pass of 8 + 8 + 4, then none
    assert first.dtype == second.dtype == np.float32 and first.shape == (ROWS, 6)
    np.testing.assert_array_equal(first, second)  # a cold and a warm build distill against the same targets
    if k is None:
        np.testing.assert_array_equal(first, teacher._logits)  # full logits are kept exactly
    else:
        np.testing.assert_allclose(softmax(first).max(axis=1), softmax(teacher._logits).max(axis=1), rtol=1e-5)


def test_full_logits_are_a_memory_mapped_npy(tmp_path: Path, teacher: Counting) -> None:
    data = source()
    for _ in range(2):  # the miss returns what the hit returns: the file, mapped
        logits, _ = cached_teacher_logits(teacher, data, tmp_path)
        assert isinstance(logits, np.memmap) and logits.mode == "r" and not logits.flags.writeable
    path = cache_path(tmp_path, cache_key(teacher, data.fingerprint(), ROWS, None), None)
    assert Path(logits.filename) == path.resolve()
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, teacher._logits)


def test_rows_match_the_teachers_logits_for_their_indices_under_shuffling(tmp_path: Path) -> None:
    data = image_data()
    teacher = TorchTeacher(tiny_net(1), None, "tiny", task=data.task)
    cached, _ = cached_teacher_logits(teacher, data.source, tmp_path, batch_size=7)
    for batch in data.source.batches("train", 8, seed=3):
        assert batch["index"].tolist() != sorted(batch["index"].tolist()) or len(batch["index"]) < 2
        np.testing.assert_allclose(cached[batch["index"]], teacher.logits(batch), rtol=1e-5, atol=1e-6)


def test_token_logits_are_cached_per_sample(tmp_path: Path) -> None:
    from edgekd.tasks import get_task

    stream = as_source({"train": TokenBlocks(9), "calib": TokenBlocks(3, 1), "test": TokenBlocks(3, 2)}, "blocks")
    task = get_task("causal-lm", vocab_size=11, max_length=6)
    teacher = TorchTeacher(TinyLM(), None, "lm", task=task)
    cached, _ = cached_teacher_logits(teacher, stream, tmp_path, batch_size=4)
    assert isinstance(cached, np.memmap) and cached.shape == (9, 6, 11)
    batch = next(stream.batches("train", 9))
    with torch.no_grad():
        np.testing.assert_allclose(cached, TinyLM().eval()(torch.from_numpy(batch["input_ids"]),
                                                           torch.from_numpy(batch["attention_mask"])).numpy(), atol=1e-6)


def test_a_new_teacher_instance_with_the_same_identity_hits(tmp_path: Path, teacher: Counting) -> None:
    cached_teacher_logits(teacher, source(), tmp_path, 3)
    again = Counting(teacher._logits)  # e.g. the next build
    assert cached_teacher_logits(again, source(), tmp_path, 3)[1] and again.calls == 0


@pytest.mark.parametrize("change", ["teacher", "data", "k", "samples"])
def test_any_change_of_the_key_is_a_miss(tmp_path: Path, teacher: Counting, change: str) -> None:
    cached_teacher_logits(teacher, source(), tmp_path, 3)
    other_teacher = Counting(teacher._logits, "retrained") if change == "teacher" else teacher
    data = source(seed=1) if change == "data" else source(rows=10) if change == "samples" else source()
    k = 4 if change == "k" else 3
    before = other_teacher.calls
    _, hit = cached_teacher_logits(other_teacher, data, tmp_path, k)
    assert not hit and other_teacher.calls > before


def test_torch_teacher_identity_changes_with_its_weights(tmp_path: Path) -> None:
    data = image_data()
    module = tiny_net(3)
    assert not cached_teacher_logits(TorchTeacher(module, None, "net", task=data.task), data.source, tmp_path)[1]
    assert cached_teacher_logits(TorchTeacher(module, None, "net", task=data.task), data.source, tmp_path)[1]
    with torch.no_grad():
        module[0].weight.add_(0.1)  # the teacher was trained further
    logits, hit = cached_teacher_logits(TorchTeacher(module, None, "net", task=data.task), data.source, tmp_path)
    assert not hit
    with torch.no_grad():
        np.testing.assert_allclose(logits, module(torch.from_numpy(data.source.splits.train.x)).numpy(), atol=1e-6)


def test_entries_are_pickle_free_files(tmp_path: Path, teacher: Counting) -> None:
    data = source()
    cached_teacher_logits(teacher, data, tmp_path, None)
    cached_teacher_logits(teacher, data, tmp_path, 3)
    full = cache_path(tmp_path, cache_key(teacher, data.fingerprint(), ROWS, None), None)
    top = cache_path(tmp_path, cache_key(teacher, data.fingerprint(), ROWS, 3), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([full.name, top.name])  # no temp files left
    np.testing.assert_array_equal(np.load(full, allow_pickle=False), teacher._logits)
    contents = read_logits_file(top)
    assert contents.k == 3 and contents.data_sha256 == data.fingerprint() and contents.producer == "counting teacher counting"


@pytest.mark.parametrize("k", [None, 3])
def test_an_unreadable_entry_is_a_miss_and_is_replaced(tmp_path: Path, teacher: Counting, k: int | None) -> None:
    data = source()
    first, _ = cached_teacher_logits(teacher, data, tmp_path, k)
    first = np.array(first)
    cache_path(tmp_path, cache_key(teacher, data.fingerprint(), ROWS, k), k).write_bytes(b"truncated")
    calls = teacher.calls
    again, hit = cached_teacher_logits(teacher, data, tmp_path, k)
    assert not hit and teacher.calls > calls
    np.testing.assert_array_equal(again, first)
    assert cached_teacher_logits(teacher, data, tmp_path, k)[1]


def test_bad_k_and_bad_logits(tmp_path: Path, teacher: Counting) -> None:
    with pytest.raises(ConfigError, match="top-k = 0"):
        cached_teacher_logits(teacher, source(), tmp_path, 0)
    with pytest.raises(ConfigError, match="top-k = 7 but counting teacher counting gives outputs \\[6\\]"):
        cached_teacher_logits(teacher, source(), tmp_path, 7)
    broken = Counting(np.full((ROWS, 6), np.nan))
    with pytest.raises(DataError, match="non-finite"):
        cached_teacher_logits(broken, source(), tmp_path, None)
    assert list(tmp_path.iterdir()) == []
