"""Fashion-MNIST (Xiao et al. 2017: 60,000 train / 10,000 test 28x28 grey images, 10 classes) read
from the IDX files of Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`):
nothing is downloaded at run time. The calibration split is held out of the training images."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from edgekd.data import Split, Splits
from edgekd.errors import DataError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train_x": "train-images-idx3-ubyte.gz", "train_y": "train-labels-idx1-ubyte.gz",
         "test_x": "t10k-images-idx3-ubyte.gz", "test_y": "t10k-labels-idx1-ubyte.gz"}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian magic, dims, then unsigned bytes), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file", "use the files of the dataset-fashion-mnist package")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {body.size} bytes", "the file is truncated")
    return body.reshape(dims)


def load(data_dir: str | None = None, calib_size: int = 1000, train_size: int | None = None, test_size: int | None = None,
         seed: int = 0) -> Splits:
    """Train / calib / test splits; `calib_size` images are drawn (seeded) out of the 60k training
    images and not trained on. `train_size`/`test_size` take seeded subsets (for quick runs)."""
    folder = Path(data_dir or os.environ.get("EDGEKD_FASHION_MNIST_DIR", DEFAULT_DIR))
    missing = [name for name in FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DataError(f"Fashion-MNIST IDX files not found in {folder} ({', '.join(missing)})",
                        "apt-get install dataset-fashion-mnist, or set EDGEKD_FASHION_MNIST_DIR")
    arrays = {key: read_idx(folder / name) for key, name in FILES.items()}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(arrays["train_y"]))
    calib_idx, train_idx = order[:calib_size], order[calib_size:]
    if train_size is not None:
        train_idx = train_idx[:train_size]
    test_idx = np.arange(len(arrays["test_y"]))
    if test_size is not None:
        test_idx = np.sort(rng.permutation(test_idx)[:test_size])

    def split(images: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> Split:
        return Split((images[idx].astype(np.float32) / 255.0)[:, None, :, :], labels[idx].astype(np.int64))

    return Splits(
        train=split(arrays["train_x"], arrays["train_y"], train_idx),
        calib=split(arrays["train_x"], arrays["train_y"], calib_idx),
        test=split(arrays["test_x"], arrays["test_y"], test_idx),
        num_classes=10,
        description=f"Fashion-MNIST from {folder}: {len(train_idx)} train, {calib_size} calibration (held out of train), "
                    f"{len(test_idx)} test, seed {seed}",
    )
