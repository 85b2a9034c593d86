"""edgekd/stages/{search,teacher,distill}.py on a project whose data factory returns torch
IterableDatasets: the teacher trains and the student distills by streaming (nothing indexes or
materialises the train split), with augmentation the distill notes say that the teacher ran on the
same augmented view every step with the caches bypassed, and the augmentations enter the cache keys."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write

PROJECT_MODULE = '''
import numpy as np
from torch import nn
from torch.utils.data import IterableDataset

STREAMS = []


class Stream(IterableDataset):
    """Labelled 1x4x4 images made one at a time; counts pulls; cannot be indexed."""

    num_classes = 3

    def __init__(self, n, seed):
        self.n, self.seed, self.pulled = n, seed, 0
        STREAMS.append(self)

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n):
            y = int(rng.integers(0, 3))
            self.pulled += 1
            yield (rng.standard_normal((1, 4, 4)) + y).astype(np.float32), y

    def __getitem__(self, index):
        raise AssertionError("the stream was indexed")


def data(n=48):
    return {"train": Stream(n, 0), "calib": Stream(8, 1), "test": Stream(12, 2)}


def net(width=8):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 16, 3))
'''

PROJECT = '''name = "streamed"

[teacher]
factory = "{module}:net"
args = {{ width = 8 }}

[teacher.train]
epochs = 2
lr = 0.01
batch_size = 8
seed = 0

[student]
factory = "{module}:net"
args = {{ width = 2 }}

[data]
factory = "{module}:data"
shuffle_buffer = 6
{augment}

[task]
kind = "image-classification"

[distill]
epochs = 2
lr = 0.01
batch_size = 8
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def make(augment: str = "", name: str = "streamproj") -> object:
        from edgekd.api import resolve_inputs
        from edgekd.config.loading import ConfigSearch

        write(tmp_path / f"{name}.py", PROJECT_MODULE)
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop(name, None)
        path = write(tmp_path / f"{name}.toml", PROJECT.format(module=name, augment=augment))
        ctx = resolve_inputs("x86", "ci", path, ConfigSearch())
        ctx.cache_root = tmp_path / "cache"
        return ctx

    return make


def build(ctx: object, out: Path) -> tuple[object, object]:
    """search, teacher and distill stages, run as the runner runs them (inputs by name)."""
    from edgekd.stages.distill import run_distill
    from edgekd.stages.search import run_search
    from edgekd.stages.teacher import run_teacher

    out.mkdir(parents=True)
    run_search(ctx, {}, out)
    teacher = run_teacher(ctx, {}, out)
    inputs = {name: out / name for name in ("student.json", "teacher.json", "teacher.safetensors")}
    return teacher, run_distill(ctx, inputs, out)


def test_an_iterable_dataset_project_trains_and_distills_by_streaming(project, tmp_path: Path) -> None:
    ctx = project()
    teacher, distilled = build(ctx, tmp_path / "out")
    train = sys.modules["streamproj"].STREAMS[0]
    assert train.n == 48 and ctx.data_source.num_samples("train") == 48
    assert "48 streamed samples" in teacher.notes[0]
    accuracy = distilled.metrics["student.accuracy"]
    assert accuracy.method == "measured" and 0.0 <= accuracy.value <= 100.0
    assert "teacher logits computed once and cached, memory-mapped" in distilled.notes[1]
    cache = list((tmp_path / "cache" / "teacher-logits").glob("*.npy"))
    assert len(cache) == 1 and isinstance(np.load(cache[0], mmap_mode="r"), np.memmap)
    assert np.load(cache[0], mmap_mode="r").shape == (48, 3)
    assert json.loads((tmp_path / "out" / "student.json").read_text())["args"] == {"width": 2}
    # every sample pulled is part of a pass over the stream: one to count it (no __len__; a build's early
    # fingerprint would count it), each epoch, the fingerprint, the logit cache; and two probes: the
    # task's spec (1 sample) and the distill set-up batch (8)
    epochs = ctx.project.teacher.train.epochs + ctx.project.distill.epochs
    assert train.pulled == 48 * (epochs + 3) + 1 + 8


def test_with_augmentation_the_notes_say_function_matching_and_the_key_changes(project, tmp_path: Path) -> None:
    from edgekd.stages.distill import distill_key
    from edgekd.stages.teacher import teacher_key

    plain = project(name="plainproj")
    ctx = project('augment = [{ name = "hflip", params = { p = 0.5 } }]', name="augproj")
    _, distilled = build(ctx, tmp_path / "aug")
    how = distilled.notes[1]
    assert "augmentation hflip(p=0.5): the teacher ran on the same augmented view as the student every step" in how
    assert "function matching, Beyer et al. 2022" in how and "caches were bypassed" in how
    assert not (tmp_path / "cache" / "teacher-logits").exists()  # nothing cached, nothing read
    assert distill_key(ctx)["augment"] == ctx.augment.identity() and "augment" not in distill_key(plain)
    assert teacher_key(ctx)["augment"] == ctx.augment.identity()  # the teacher trained here saw them too
