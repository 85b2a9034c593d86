"""Small real data and models for the training tests: in-memory Splits of tiny images, a torch
IterableDataset that counts what is pulled and refuses random access, token blocks for a causal LM,
and modules that record the inputs they were run on."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from edgekd.data import Split, Splits
from edgekd.data.sources import SplitsSource
from edgekd.distill.streaming import TrainData
from edgekd.tasks import get_task

SHAPE = (1, 4, 4)
CLASSES = 3
VOCAB = 11
LENGTH = 6


def tiny_splits(n_train: int = 40, seed: int = 0) -> Splits:
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        y = rng.integers(0, CLASSES, n).astype(np.int64)
        x = (rng.standard_normal((n, *SHAPE)) + y[:, None, None, None]).astype(np.float32)  # learnable
        return Split(x, y)

    return Splits(split(n_train), split(8), split(10), CLASSES, "tiny images")


def image_data(n_train: int = 40, augment: object = None) -> TrainData:
    return TrainData(SplitsSource(tiny_splits(n_train)), get_task("image-classification", input_shape=SHAPE,
                                                                   num_classes=CLASSES), augment)  # type: ignore[arg-type]


def tiny_net(seed: int = 0, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 16, CLASSES))


class Recording(nn.Module):
    """A module that keeps a copy of every input it was run on (`seen`), then runs `inner`."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


class Stream(IterableDataset):
    """`n` labelled images made one at a time; `pulled` counts the samples handed out. It has no
    __len__ and no __getitem__: the only way in is to iterate, one sample at a time."""

    num_classes = CLASSES

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.pulled = n, seed, 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n):
            y = int(rng.integers(0, CLASSES))
            self.pulled += 1
            yield (rng.standard_normal(SHAPE) + y).astype(np.float32), y

    def __getitem__(self, index: int) -> object:  # pragma: no cover - the test fails if it is reached
        raise AssertionError("the stream was indexed: something tried to materialise it")


class TokenBlocks(Dataset):
    """Map-style blocks of token ids with attention masks (some rows padded at the end)."""

    vocab_size = VOCAB

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.ids = rng.integers(0, VOCAB, (n, LENGTH)).astype(np.int64)
        self.mask = np.ones((n, LENGTH), np.int64)
        self.mask[::3, LENGTH - 2:] = 0  # every third block ends in two padding tokens

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i]}


class TinyLM(nn.Module):
    """Next-token logits [B, T, V] from (input_ids, attention_mask): embeddings and a mixing of the
    previous position (so the model is not a bag of tokens)."""

    def __init__(self, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(VOCAB, width)
        self.mix = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, VOCAB)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids) * attention_mask[..., None]
        previous = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        return self.head(torch.tanh(self.mix(torch.cat([h, previous], dim=-1))))
