"""The data a project distills on: train / calibration / test splits as numpy arrays."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from edgekd.errors import DataError


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray  # int64 class labels, (N,)

    def __len__(self) -> int:
        return len(self.y)

    def sha256(self) -> str:
        """Content hash of this split (inputs and labels): what logits files and caches are tied to."""
        digest = hashlib.sha256()
        for arr in (self.x, self.y):
            digest.update(f"{arr.dtype}{arr.shape}".encode())
            digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Splits:
    """`calib` is drawn for quantization calibration and must not overlap `test`."""

    train: Split
    calib: Split
    test: Split
    num_classes: int
    description: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.test.x.shape[1:])

    def sha256(self) -> str:
        return hashlib.sha256("".join(s.sha256() for s in (self.train, self.calib, self.test)).encode()).hexdigest()


def check_splits(value: object, source: str) -> Splits:
    """Validate what a data factory returned; errors name the factory."""
    if not isinstance(value, Splits):
        raise DataError(f"{source} returned {type(value).__name__}, not edgekd.data.Splits", "return Splits(train=..., calib=..., test=..., num_classes=...)")
    shapes = set()
    for name in ("train", "calib", "test"):
        split = getattr(value, name)
        if len(split) == 0:
            raise DataError(f"{source}: split '{name}' is empty", "every split needs samples")
        if split.x.dtype != np.float32 or split.y.dtype != np.int64:
            raise DataError(f"{source}: split '{name}' has x {split.x.dtype} / y {split.y.dtype}", "use float32 inputs and int64 labels")
        if len(split.x) != len(split.y):
            raise DataError(f"{source}: split '{name}' has {len(split.x)} inputs but {len(split.y)} labels", "give one label per input")
        if split.y.min() < 0 or split.y.max() >= value.num_classes:
            raise DataError(f"{source}: split '{name}' has labels outside 0..{value.num_classes - 1}", "check num_classes")
        shapes.add(split.x.shape[1:])
    if len(shapes) != 1:
        raise DataError(f"{source}: splits have different input shapes {sorted(shapes)}", "use one input shape")
    return value
