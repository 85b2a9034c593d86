"""The built-in example (torch is imported inside the factories so that a fully cached
rebuild never loads it): scikit-learn's 8x8 digits (1,797 images shipped inside scikit-learn),
a teacher CNN and a student CNN with >10x fewer MACs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgekd.data import Split, Splits

if TYPE_CHECKING:
    from torch import nn


def load(test_fraction: float = 0.2, calib_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Stratified train / calib / test split; calib is held out of training and of test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    calib_share = calib_fraction / (1.0 - test_fraction)
    x_train, x_cal, y_train, y_cal = train_test_split(x_rest, y_rest, test_size=calib_share, stratify=y_rest, random_state=seed)
    return Splits(
        train=Split(x_train, y_train),
        calib=Split(x_cal, y_cal),
        test=Split(x_test, y_test),
        num_classes=10,
        description=f"scikit-learn load_digits: 8x8 grey digits, {len(y)} images, stratified split seed {seed}",
    )


def _conv(cin: int, cout: int) -> list[nn.Module]:
    from torch import nn

    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]


def teacher(width: int = 32) -> nn.Module:
    """Three conv blocks (w, 2w, 4w channels) and a two-layer head: about 2.4M MACs at width 32."""
    from torch import nn

    w = width
    return nn.Sequential(
        *_conv(1, w), *_conv(w, 2 * w), nn.MaxPool2d(2),
        *_conv(2 * w, 4 * w), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * w * 4, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def student(width: int = 8) -> nn.Module:
    """Same shape, a quarter of the width, one linear head: about 0.15M MACs at width 8."""
    from torch import nn

    w = width
    return nn.Sequential(
        *_conv(1, w), *_conv(w, 2 * w), nn.MaxPool2d(2),
        *_conv(2 * w, 4 * w), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * w * 4, 10),
    )
