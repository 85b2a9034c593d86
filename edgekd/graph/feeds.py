"""Named-input data for any model: generated feeds (edgekd.graph.feedgen: token ids inside the
vocabulary, attention masks of ones, empty past key/values, normal floats for images), and
`FeedSet`, samples of every input with optional labels, read from files or generated.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from edgekd.common.npy_files import check_npy, check_npz
from edgekd.errors import ConfigError, DataError
from edgekd.graph import feedgen
from edgekd.graph.inputs import ModelInputs, ResolvedInput

SEED = feedgen.SEED
LABELS_FILE = "labels.npy"


def make_feeds(inputs: ModelInputs, rows: int | None = None, seed: int = SEED) -> dict[str, np.ndarray]:
    """One array per input at its resolved shape; with `rows`, the batch axis holds that many rows
    (edgekd.graph.feedgen, which deploy bundles carry too)."""
    return feedgen.make_feeds([i.to_json() for i in inputs.inputs], rows, seed)


@dataclass(frozen=True)
class FeedSet:
    """Named model inputs with the samples along axis 0 of every array, and labels where known."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    description: str
    fit_for_accuracy: bool = True  # False for generated feeds: no metric computed on them means anything

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def take(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: array[start:stop] for name, array in self.arrays.items()}

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), size):
            yield self.take(start, start + size)

    def first(self, rows: int = 1) -> dict[str, np.ndarray]:
        return self.take(0, rows)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for name in sorted(self.arrays):
            array = self.arrays[name]
            digest.update(f"{name}{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()


def random_feedset(inputs: ModelInputs, rows: int, seed: int = SEED) -> FeedSet:
    return FeedSet(make_feeds(inputs, rows, seed), None,
                   f"{rows} generated feeds (seeded random values at the model's input shapes)",
                   fit_for_accuracy=False)


def _cast(name: str, array: np.ndarray, spec: ResolvedInput, where: Path) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if array.dtype == want:
        return array
    if np.can_cast(array.dtype, want, casting="same_kind"):
        return array.astype(want)
    raise ConfigError(f"{where}: '{name}' holds {array.dtype}, but the model's input '{name}' is {want}",
                      f"save it as {want}")


def read_feed_arrays(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The arrays of a data folder by input name (several files of one input are concatenated
    along the sample axis) and its labels (labels.npy or a "labels" array), if any."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"data folder {folder} not found", "give a folder of .npy/.npz files named by model input")
    parts: dict[str, list[np.ndarray]] = {}
    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".npy":
                check_npy(path)  # the header against the file's size (edgekd.common.npy_files)
                parts.setdefault(path.stem, []).append(np.load(path, allow_pickle=False))
            elif path.suffix == ".npz":
                check_npz(path)
                with np.load(path, allow_pickle=False) as archive:
                    for key in archive.files:
                        parts.setdefault(key, []).append(archive[key])
        except (ValueError, OSError) as exc:
            raise ConfigError(f"{path}: not a readable numpy file ({exc})", "save arrays with numpy.save / numpy.savez") from None
        except DataError as exc:  # a header that does not match the file's size, or pickled objects
            raise ConfigError(str(exc), exc.hint) from None
    try:
        arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    except ValueError as exc:
        raise ConfigError(f"{folder}: the files of one input do not stack along axis 0 ({exc})", "give every file the same sample shape") from None
    if not arrays:
        raise ConfigError(f"data folder {folder} has no .npy/.npz files", "save one array per model input, named by the input")
    return arrays, arrays.pop("labels", None)


def load_feed_folder(folder: Path, inputs: ModelInputs) -> FeedSet:
    """A data set from a folder of `.npy` files named by input (`input_ids.npy`) and/or `.npz`
    files holding arrays named by input, with optional labels in `labels.npy`. Every input needs
    data; the non-sample axes must be the resolved shape's."""
    folder = Path(folder)
    parts, labels = read_feed_arrays(folder)
    missing = [n for n in inputs.names() if n not in parts]
    if missing:
        raise ConfigError(f"{folder} has no data for input(s) {', '.join(missing)} (found: {', '.join(sorted(parts)) or 'nothing'})",
                          f"add {missing[0]}.npy (samples along axis 0)")
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs.inputs:
        array = _cast(spec.name, parts[spec.name], spec, folder)
        if array.ndim != len(spec.shape):
            raise ConfigError(f"{folder}: '{spec.name}' has rank {array.ndim}, the model's input has rank {len(spec.shape)} "
                              f"({'x'.join(map(str, spec.shape))})", "put the samples along axis 0, one per row")
        wrong = [(axis, size, source) for axis, (size, source) in enumerate(zip(spec.shape, spec.sources))
                 if axis > 0 and array.shape[axis] != size]
        if wrong:
            axis, size, source = wrong[0]
            raise ConfigError(f"{folder}: '{spec.name}' has {array.shape[axis]} on axis {axis}, the model's input takes {size} there "
                              f"({source})", f"save '{spec.name}' with shape N x {'x'.join(map(str, spec.shape[1:]))}")
        arrays[spec.name] = array
    counts = {name: len(a) for name, a in arrays.items()}
    if labels is not None:
        counts[LABELS_FILE] = len(labels)
    if len(set(counts.values())) != 1:
        raise ConfigError(f"{folder}: inputs have different sample counts {counts}", "give every input (and labels) the same count")
    if labels is not None and not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"{folder}/{LABELS_FILE}: labels are {labels.dtype}", "save integer class labels")
    desc = f"{len(labels) if labels is not None else counts[inputs.names()[0]]} samples from {folder}" + (" with labels" if labels is not None else "")
    return FeedSet(arrays, None if labels is None else labels.astype(np.int64), desc)
