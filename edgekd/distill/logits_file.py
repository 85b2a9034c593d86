"""Soft labels on disk: a compact, pickle-free `.npz` of each sample's top-k teacher probabilities.

A logits file lets a teacher's soft labels be produced somewhere else (another machine, another
party, a teacher too big to run here) and used as the teacher of a build. It is written with
`np.savez_compressed` and read with `np.load(allow_pickle=False)`; every array is a plain numeric or
fixed-width unicode array, so nothing in it can execute code, and every array's header is checked
against its size before it is read (edgekd.common.npy_files: a doctored shape is a DataError, not a
MemoryError).

Arrays (format version 1), for N samples, C classes, top-k:

| key | dtype | shape | holds |
|---|---|---|---|
| `magic` | unicode | () | `"edgekd-logits"` |
| `format_version` | int32 | () | 1 |
| `indices` | int16 (C <= 32767) else int32 | (N, k) | the k most probable classes, most probable first |
| `probs` | float32 | (N, k) | their probabilities at temperature 1 |
| `rest` | float32 | (N,) | the probability mass of the other C - k classes (1 - sum of `probs`) |
| `num_classes`, `k`, `num_samples` | int64 | () | C, k, N |
| `data_sha256` | unicode | () | the data the rows belong to, row i = sample i (in edgekd builds edgekd.distill.streaming.train_split_sha256: `Split.sha256()` of in-memory data) |
| `producer` | unicode | () | what made the soft labels (a teacher's description) |

Probabilities are float32, not float16: distillation at temperature T uses p ** (1 / T), which lifts
the small probabilities of the tail ("dark knowledge") the most, and float16 flushes every p below
6e-8 to zero and keeps about 3 significant digits below 6e-5. float32 keeps them down to 1e-38 with
7 digits, for 2 more bytes per stored value (the measured sizes are in tests/distill/test_logits_file.py).

`LogitsFile.log_probs()` rebuilds the full distribution: the top-k probabilities as stored and the
rest mass spread uniformly over the other C - k classes (the one approximation: the tail's shape
is lost, its total at T=1 is kept; at T > 1 a uniform tail weighs at least as much as the teacher's
own, p ** (1/T) being concave), renormalized, as float32 log-probabilities. Those are valid logits:
their softmax is the stored distribution, and dividing them by T gives exactly what dividing the
teacher's own logits by T would give for that distribution (log-probabilities differ from logits
by a per-row constant, which softmax ignores). With k = C the file is exact up to float32 rounding.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.common.fsutil import atomic_write_bytes
from edgekd.common.npy_files import check_npz
from edgekd.errors import ConfigError, DataError

MAGIC = "edgekd-logits"
FORMAT_VERSION = 1
_KEYS = ("magic", "format_version", "indices", "probs", "rest", "num_classes", "k", "num_samples", "data_sha256", "producer")
_SUM_TOLERANCE = 1e-3  # float32 probabilities of one row sum to 1 within this
_FLOOR = float(np.finfo(np.float32).tiny)  # a probability of 0 becomes this before the log (log = -87.3)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float64 (max-subtracted, so large logits do not overflow)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LogitsFile:
    """A logits file's contents; `path` is where it was read from (for messages)."""

    indices: np.ndarray
    probs: np.ndarray
    rest: np.ndarray
    num_classes: int
    k: int
    num_samples: int
    data_sha256: str
    producer: str
    path: Path | None = None

    def check_data(self, data_sha256: str, num_samples: int) -> None:
        """DataError unless the file was made for this data (same sha256, same sample count)."""
        if self.data_sha256 != data_sha256:
            raise DataError(f"{self.path}: logits file is for data sha256 {self.data_sha256[:12]}…, this data is {data_sha256[:12]}…",
                            "produce the soft labels on this exact data set (same samples, same order)")
        if self.num_samples != num_samples:
            raise DataError(f"{self.path}: logits file has {self.num_samples} samples, this data has {num_samples}",
                            "produce the soft labels on this exact data set (same samples, same order)")

    def distribution(self, rows: np.ndarray | None = None) -> np.ndarray:
        """[N, C] float64 probabilities (of the samples `rows` names, all when None): top-k as stored,
        rest mass spread uniformly over the other classes, zeros floored at float32's smallest
        normal, rows renormalized to sum to 1."""
        take = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
        indices, probs, rest = self.indices[take], self.probs[take], self.rest[take]
        full = np.empty((len(rest), self.num_classes), dtype=np.float64)
        others = self.num_classes - self.k
        full[:] = (rest.astype(np.float64) / others)[:, None] if others else 0.0
        np.put_along_axis(full, indices.astype(np.int64), probs.astype(np.float64), axis=1)
        np.maximum(full, _FLOOR, out=full)
        return full / full.sum(axis=1, keepdims=True)

    def log_probs(self, rows: np.ndarray | None = None) -> np.ndarray:
        """[N, C] float32 log-probabilities of `distribution(rows)`: usable as the teacher's logits."""
        return np.log(self.distribution(rows)).astype(np.float32)


def write_logits_file(logits: np.ndarray, path: Path, k: int, data_sha256: str, producer: str) -> LogitsFile:
    """Softmax at T=1 of `logits` [N, C], keep the top-k of each row, write `path` atomically."""
    path = Path(path)
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise DataError(f"{path}: logits to write have shape {logits.shape}", "give [samples, classes] logits with at least 2 classes")
    if not np.issubdtype(logits.dtype, np.floating) or not np.isfinite(logits).all():
        raise DataError(f"{path}: logits to write are {logits.dtype} with non-finite or non-float values", "give finite float logits")
    num_samples, num_classes = logits.shape
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= num_classes:
        raise ConfigError(f"{path}: top-k = {k} for {num_classes} classes", f"choose k between 1 and {num_classes}")
    probs_full = softmax(logits)
    order = np.argsort(-probs_full, axis=1, kind="stable")[:, :k]  # most probable first; ties by class index
    probs = np.take_along_axis(probs_full, order, axis=1)
    rest = np.clip(1.0 - probs.sum(axis=1), 0.0, 1.0)
    contents = LogitsFile(
        indices=order.astype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32),
        probs=probs.astype(np.float32), rest=rest.astype(np.float32), num_classes=num_classes, k=int(k),
        num_samples=num_samples, data_sha256=data_sha256, producer=producer, path=path,
    )
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, magic=np.array(MAGIC), format_version=np.array(FORMAT_VERSION, dtype=np.int32),
        indices=contents.indices, probs=contents.probs, rest=contents.rest,
        num_classes=np.array(num_classes, dtype=np.int64), k=np.array(k, dtype=np.int64),
        num_samples=np.array(num_samples, dtype=np.int64), data_sha256=np.array(data_sha256), producer=np.array(producer),
    )
    atomic_write_bytes(path, buffer.getvalue())
    return contents


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: logits file not found", "check the path")
    check_npz(path)  # every array's header against its size, and all of them against this host's memory
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in _KEYS if key not in npz.files]
            if missing:
                raise DataError(f"{path}: not an edgekd logits file (missing {', '.join(missing)})", "write it with edgekd.distill.logits_file.write_logits_file")
            return {key: npz[key] for key in _KEYS}
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise DataError(f"{path}: logits file holds pickled objects or unreadable arrays ({exc})", "write it with edgekd.distill.logits_file.write_logits_file") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})", "write it with edgekd.distill.logits_file.write_logits_file") from None


def _scalar(arrays: dict[str, np.ndarray], key: str, kind: str, path: Path) -> object:
    value = arrays[key]
    if value.shape != () or value.dtype.kind != kind:
        raise DataError(f"{path}: '{key}' is {value.dtype} {value.shape}, expected a scalar of kind '{kind}'", "write it with edgekd.distill.logits_file.write_logits_file")
    return value.item()


def read_logits_file(path: Path) -> LogitsFile:
    """Read and validate a logits file; every problem is a DataError naming the file and what is wrong."""
    path = Path(path)
    arrays = _load_arrays(path)
    hint = "write it with edgekd.distill.logits_file.write_logits_file"
    if _scalar(arrays, "magic", "U", path) != MAGIC:
        raise DataError(f"{path}: not an edgekd logits file (magic {arrays['magic'].item()!r})", hint)
    version = _scalar(arrays, "format_version", "i", path)
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: logits file format version {version}, this edgekd reads version {FORMAT_VERSION}", "re-write it with this edgekd")
    num_classes, k, num_samples = (int(_scalar(arrays, key, "i", path)) for key in ("num_classes", "k", "num_samples"))  # type: ignore[call-overload]
    indices, probs, rest = arrays["indices"], arrays["probs"], arrays["rest"]
    if not 1 <= k <= num_classes or num_samples < 1:
        raise DataError(f"{path}: k = {k}, num_classes = {num_classes}, num_samples = {num_samples} are inconsistent", hint)
    if indices.shape != (num_samples, k) or probs.shape != (num_samples, k) or rest.shape != (num_samples,):
        raise DataError(f"{path}: arrays have shapes indices {indices.shape}, probs {probs.shape}, rest {rest.shape}; "
                        f"expected ({num_samples}, {k}), ({num_samples}, {k}), ({num_samples},)", hint)
    if indices.dtype not in (np.int16, np.int32) or probs.dtype != np.float32 or rest.dtype != np.float32:
        raise DataError(f"{path}: arrays have dtypes indices {indices.dtype}, probs {probs.dtype}, rest {rest.dtype}; "
                        "expected int16/int32, float32, float32", hint)
    if indices.min() < 0 or indices.max() >= num_classes:
        raise DataError(f"{path}: class indices outside 0..{num_classes - 1}", hint)
    if k > 1 and (np.diff(np.sort(indices, axis=1), axis=1) == 0).any():
        raise DataError(f"{path}: a sample lists the same class twice in its top-{k}", hint)
    if not (np.isfinite(probs).all() and np.isfinite(rest).all()) or probs.min() < 0 or rest.min() < 0:
        raise DataError(f"{path}: probabilities are negative or not finite", hint)
    worst = float(np.abs(probs.sum(axis=1, dtype=np.float64) + rest - 1.0).max())
    if worst > _SUM_TOLERANCE:
        raise DataError(f"{path}: a sample's probabilities sum to 1 ± {worst:.3g} (allowed ± {_SUM_TOLERANCE})", hint)
    return LogitsFile(indices=indices, probs=probs, rest=rest, num_classes=num_classes, k=k, num_samples=num_samples,
                      data_sha256=str(_scalar(arrays, "data_sha256", "U", path)), producer=str(_scalar(arrays, "producer", "U", path)), path=path)
