"""The teacher-logit cache: when each sample's input is the same every epoch (no augmentation), the
teacher runs once over the training data, streamed batch by batch in its natural order, and its
outputs are kept on disk across epochs and builds, one row per sample, memory-mapped: training
reads the rows of each batch by batch["index"] and nothing holds the whole array in memory.

An entry is keyed by the teacher's content identity, the data's fingerprint and train sample count,
k, the logits-file format version and the versions of the runtimes that compute logits (torch,
onnxruntime, numpy); a change to any of them is a miss. `k=None` keeps the full outputs as a float32
`.npy` ([N, C], or [N, T, V] for token logits), written through np.lib.format.open_memmap into a
temp file renamed into place, and opened with `mmap_mode="r"`. An integer k keeps the top-k
probabilities as a logits file (edgekd.distill.logits_file): that path is in memory (the full
logits are streamed to a temporary memory-mapped file first, then the file's top-k are computed
over all of them and its log-probabilities returned as one [N, C] array).

A miss returns exactly what a later hit will return: for top-k entries that is the file's
reconstructed log-probabilities, not the teacher's raw logits, so a cold and a warm build distill
against the same targets.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekd.common.fsutil import temp_file_beside
from edgekd.common.tempdirs import temp_dir
from edgekd.common.toolchain import versions
from edgekd.data.sources import DataSource
from edgekd.distill.logits_file import (
    FORMAT_VERSION,
    read_logits_file,
    write_logits_file,
)
from edgekd.distill.streaming import TEACHER_BATCH, count_samples, open_rows, write_rows
from edgekd.distill.teachers import TeacherSource
from edgekd.errors import ConfigError, DataError
from edgekd.pipeline.cache import make_key

RUNTIMES = ("torch", "onnxruntime", "numpy")
LOGITS = "logits"


def cache_key(teacher: TeacherSource, data_sha256: str, num_samples: int, k: int | None) -> str:
    """sha256 of everything the cached logits depend on."""
    return make_key({"teacher": teacher.identity(), "data_sha256": data_sha256, "num_samples": num_samples, "k": k,
                     "logits_format": FORMAT_VERSION, "runtimes": versions(RUNTIMES)})


def cache_path(cache_dir: Path, key: str, k: int | None) -> Path:
    return Path(cache_dir) / f"teacher-logits-{key}{'.npy' if k is None else '.npz'}"


def _read_top_k(path: Path, data_sha256: str, num_samples: int, k: int) -> np.ndarray | None:
    try:
        contents = read_logits_file(path)
        contents.check_data(data_sha256, num_samples)
    except DataError:
        return None
    return contents.log_probs() if contents.k == k else None


def stream_logits(teacher: TeacherSource, source: DataSource, path: Path, rows: int, batch_size: int = TEACHER_BATCH) -> None:
    """The teacher's outputs on the train split (natural order), written to the `.npy` at `path`
    atomically (a temp file beside it, renamed); non-finite outputs are a DataError."""
    def produce(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = teacher.logits(batch)
        if not np.isfinite(out).all():
            raise DataError(f"teacher {teacher.describe()}: gives non-finite logits on the training data",
                            "check the teacher and the inputs for NaN/inf")
        return {LOGITS: out}

    tmp = temp_file_beside(path)
    try:
        write_rows(source, produce, {LOGITS: tmp}, rows, batch_size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_teacher_logits(teacher: TeacherSource, source: DataSource, cache_dir: Path, k: int | None = None,
                          batch_size: int = TEACHER_BATCH) -> tuple[np.ndarray, bool]:
    """The teacher's outputs for every train sample of `source` (row i = sample i) and whether they
    came from the cache: a read-only np.memmap for `k=None`, the top-k file's log-probabilities for k.

    The train split must be what every epoch sees (no augmentation). On a miss the teacher runs once
    over the streamed split and the entry is written; an unreadable entry (a file edited or truncated
    outside edgekd) counts as a miss and is replaced."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ConfigError(f"teacher logit cache: top-k = {k!r}", "give a positive integer k, or None for full logits")
    data_sha256, rows = source.fingerprint(), count_samples(source)
    path = cache_path(cache_dir, cache_key(teacher, data_sha256, rows, k), k)
    if path.is_file():
        cached = open_rows(path, rows) if k is None else _read_top_k(path, data_sha256, rows, k)
        if cached is not None:
            return cached, True
    if k is None:
        stream_logits(teacher, source, path, rows, batch_size)
        opened = open_rows(path, rows)
        if opened is None:
            raise DataError(f"{path}: the teacher-logit cache entry just written cannot be read back", "check the cache folder's disk")
        return opened, False
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with temp_dir("topk", Path(cache_dir)) as tmp:
        full = tmp / "logits.npy"
        stream_logits(teacher, source, full, rows, batch_size)
        logits = np.load(full, mmap_mode="r", allow_pickle=False)
        if logits.ndim != 2 or k > logits.shape[1]:
            raise ConfigError(f"teacher logit cache: top-k = {k} but {teacher.describe()} gives outputs {list(logits.shape[1:])} per sample",
                              "choose k <= the number of classes of [samples, classes] logits, or None for full logits")
        written = write_logits_file(logits, path, k, data_sha256, teacher.describe())
        del logits
    return written.log_probs(), False
