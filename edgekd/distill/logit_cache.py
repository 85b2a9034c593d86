"""The teacher-logit cache: when each sample's input is the same every epoch (no augmentation), the
teacher runs once over the training data, and its logits are kept across epochs and across builds.

An entry is keyed by the teacher's content identity, the data's sha256 and sample count, k, the
logits-file format version and the versions of the runtimes that compute logits (torch,
onnxruntime, numpy); a change to any of them is a miss. `k=None` keeps the full logits as a float32
`.npy`; an integer k keeps the top-k probabilities as a logits file (edgekd.distill.logits_file).
Both are written atomically and read with `allow_pickle=False`.

A miss returns exactly what a later hit will return: for top-k entries that is the file's
reconstructed log-probabilities, not the teacher's raw logits, so a cold and a warm build distill
against the same targets.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from edgekd.common.fsutil import atomic_write_bytes
from edgekd.common.toolchain import versions
from edgekd.distill.logits_file import (
    FORMAT_VERSION,
    read_logits_file,
    write_logits_file,
)
from edgekd.distill.teachers import TeacherSource
from edgekd.errors import ConfigError, DataError
from edgekd.pipeline.cache import make_key

RUNTIMES = ("torch", "onnxruntime", "numpy")


def cache_key(teacher: TeacherSource, data_sha256: str, num_samples: int, k: int | None) -> str:
    """sha256 of everything the cached logits depend on."""
    return make_key({"teacher": teacher.identity(), "data_sha256": data_sha256, "num_samples": num_samples, "k": k,
                     "logits_format": FORMAT_VERSION, "runtimes": versions(RUNTIMES)})


def cache_path(cache_dir: Path, key: str, k: int | None) -> Path:
    return Path(cache_dir) / f"teacher-logits-{key}{'.npy' if k is None else '.npz'}"


def _read_full(path: Path, num_samples: int) -> np.ndarray | None:
    """The cached full logits, or None when the entry is unusable (then it is recomputed)."""
    try:
        logits = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if logits.dtype != np.float32 or logits.ndim != 2 or logits.shape[0] != num_samples:
        return None
    return logits


def _read_top_k(path: Path, data_sha256: str, num_samples: int, k: int) -> np.ndarray | None:
    try:
        contents = read_logits_file(path)
        contents.check_data(data_sha256, num_samples)
    except DataError:
        return None
    return contents.log_probs() if contents.k == k else None


def cached_teacher_logits(teacher: TeacherSource, x: np.ndarray, cache_dir: Path, data_sha256: str,
                          k: int | None) -> tuple[np.ndarray, bool]:
    """The teacher's logits for every row of `x` and whether they came from the cache.

    `x` must be the inputs exactly as every epoch sees them (no augmentation) and `data_sha256` must
    name them. On a miss the teacher runs once and the entry is written; an unreadable entry (a
    file edited or truncated outside edgekd) counts as a miss and is replaced."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ConfigError(f"teacher logit cache: top-k = {k!r}", "give a positive integer k, or None for full logits")
    key = cache_key(teacher, data_sha256, len(x), k)
    path = cache_path(cache_dir, key, k)
    if path.is_file():
        cached = _read_full(path, len(x)) if k is None else _read_top_k(path, data_sha256, len(x), k)
        if cached is not None:
            return cached, True
    logits = teacher.logits(x)
    if not np.isfinite(logits).all():
        raise DataError(f"teacher {teacher.describe()}: gives non-finite logits on the training data", "check the teacher and the inputs for NaN/inf")
    if k is None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(logits, dtype=np.float32), allow_pickle=False)
        atomic_write_bytes(path, buffer.getvalue())
        return logits.astype(np.float32, copy=False), False
    if k > logits.shape[1]:
        raise ConfigError(f"teacher logit cache: top-k = {k} but {teacher.describe()} gives {logits.shape[1]} classes",
                          f"choose k <= {logits.shape[1]}, or None for full logits")
    return write_logits_file(logits, path, k, data_sha256, teacher.describe()).log_probs(), False
