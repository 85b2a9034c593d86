"""The teacher-feature cache: the teacher-logit cache's counterpart for feature losses (FitNet,
attention transfer). When each sample's input is the same every epoch (no augmentation), a torch
teacher runs once over the training data, streamed batch by batch in natural order, with forward
hooks on the layers the losses name; those activations are kept on disk (float32, exactly as the
teacher gave them), one memory-mapped `.npy` per layer, across epochs and builds. Without it a
feature loss runs the teacher every step, which for a teacher many times the student's size is most
of the training time.

Activations can be large (samples x C x H x W floats), so the cache is used only when all the named
layers together fit `max_mb` (`distill.teacher_feature_cache_mb`) of disk; over it the caller runs the
teacher every step, and the note it gets says why. An entry is a folder `teacher-features-<key>/`
holding `f<i>.npy` for the i-th layer, keyed like a logit-cache entry (the teacher's content
identity, the data's fingerprint and train sample count, the runtimes) plus the layer names. It is
written in a temp folder beside it (np.lib.format.open_memmap, row i = sample batch["index"] i) that is
renamed into place (the first of concurrent writers wins), and opened with `mmap_mode="r"`; an
unreadable entry is a miss and is replaced.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.common.tempdirs import make_temp_dir, temp_dir
from edgekd.common.toolchain import versions
from edgekd.config.models import DistillConfig
from edgekd.data.sources import DataSource
from edgekd.distill.features import FeatureCapture
from edgekd.distill.streaming import count_samples, first_batch, open_rows, write_rows
from edgekd.distill.teachers import TorchTeacher, forward_module
from edgekd.pipeline.cache import make_key

FORMAT = 2  # 1: one .npz per entry (read whole); 2: a folder of memory-mapped .npy
RUNTIMES = ("torch", "numpy")
MB = 1024 * 1024


def cache_key(teacher: TorchTeacher, data_sha256: str, num_samples: int, layers: list[str]) -> str:
    return make_key({"teacher": teacher.identity(), "data_sha256": data_sha256, "num_samples": num_samples,
                     "layers": layers, "feature_format": FORMAT, "runtimes": versions(RUNTIMES)})


def cache_path(cache_dir: Path, key: str) -> Path:
    """The entry's folder (one `f<i>.npy` per layer)."""
    return Path(cache_dir) / f"teacher-features-{key}"


def layer_file(layers: list[str], layer: str) -> str:
    return f"f{layers.index(layer)}"


@torch.no_grad()
def run_features(teacher: TorchTeacher, batch: dict[str, Any], layers: list[str]) -> dict[str, np.ndarray]:
    """The named layers' float32 outputs on one batch (teacher in eval mode)."""
    with teacher.evaluating(), FeatureCapture(teacher.module, layers, source="teacher") as cap:
        forward_module(teacher.module, batch, teacher.task)
        return {layer: cap.features[layer].float().cpu().numpy() for layer in layers}


def feature_mb(teacher: TorchTeacher, source: DataSource, layers: list[str]) -> float:
    """MB that the named layers' float32 outputs take for every train sample (from a one-row forward)."""
    one = run_features(teacher, first_batch(source, 1), layers)
    return sum(math.prod(a.shape[1:]) for a in one.values()) * 4 * count_samples(source) / MB


def _read(folder: Path, layers: list[str], rows: int) -> dict[str, np.ndarray] | None:
    features = {layer: open_rows(folder / f"{layer_file(layers, layer)}.npy", rows) for layer in layers}
    if any(array is None for array in features.values()):
        return None
    return features  # type: ignore[return-value]


def _write(teacher: TorchTeacher, source: DataSource, layers: list[str], folder: Path, rows: int) -> None:
    """Compute the entry in a temp folder beside `folder` and rename it into place. Builds sharing
    the cache may write the same entry at once: the first rename wins, the others drop theirs; an
    unreadable entry found here is first renamed aside (one rename, so no reader sees half of it)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir("features", folder.parent, shared=True)
    try:
        targets = {layer_file(layers, layer): tmp / f"{layer_file(layers, layer)}.npy" for layer in layers}

        def produce(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {layer_file(layers, layer): value for layer, value in run_features(teacher, batch, layers).items()}

        write_rows(source, produce, targets, rows, teacher.batch_size)
        if folder.exists() and _read(folder, layers, rows) is None:  # an unreadable entry: replaced
            with temp_dir("features-old", folder.parent) as aside, contextlib.suppress(FileNotFoundError):
                os.replace(folder, aside / folder.name)  # FileNotFoundError: another build moved it first
        try:
            os.rename(tmp, folder)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            # another build committed the same entry meanwhile: keep that one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_teacher_features(teacher: TorchTeacher, source: DataSource, layers: list[str], cache_dir: Path,
                            max_mb: float) -> tuple[dict[str, np.ndarray] | None, str]:
    """The teacher's outputs at `layers` for every train sample of `source` (layer -> read-only
    np.memmap [N, ...] float32, row i = sample i) and a note on where they came from; (None, why)
    when they would take more than `max_mb`, and the teacher must run every step.

    The train split must be what every epoch sees (no augmentation)."""
    layers = list(dict.fromkeys(layers))
    size = feature_mb(teacher, source, layers)
    if size > max_mb:
        return None, (f"teacher run every step: its features at {', '.join(layers)} would take {size:,.0f} MB, over "
                      f"distill.teacher_feature_cache_mb = {max_mb:g}")
    rows = count_samples(source)
    folder = cache_path(cache_dir, cache_key(teacher, source.fingerprint(), rows, layers))
    if folder.is_dir():
        cached = _read(folder, layers, rows)
        if cached is not None:
            return cached, f"teacher features ({size:,.0f} MB, memory-mapped) from the cache (computed in an earlier build)"
    _write(teacher, source, layers, folder, rows)
    features = _read(folder, layers, rows)
    if features is None:
        raise OSError(f"{folder}: the teacher-feature cache entry just written cannot be read back")
    return features, f"teacher features ({size:,.0f} MB, memory-mapped) computed once and cached"


def features_for_training(teacher: TorchTeacher, source: DataSource, layers: list[str], cfg: DistillConfig,
                          cache_root: Path) -> tuple[dict[str, np.ndarray] | None, str]:
    """What a distillation on `source`'s train split gets for the teacher's `layers`: cached features
    when `cfg` allows it (teacher_logit_cache on and a non-zero teacher_feature_cache_mb) and they
    fit, else None (the teacher runs every step); with a note on which and why."""
    if not (cfg.teacher_logit_cache and cfg.teacher_feature_cache_mb > 0):
        return None, "teacher run every step for its features"
    return cached_teacher_features(teacher, source, layers, Path(cache_root) / "teacher-features", cfg.teacher_feature_cache_mb)
