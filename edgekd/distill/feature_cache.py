"""The teacher-feature cache: the teacher-logit cache's counterpart for feature losses (FitNet,
attention transfer). When each sample's input is the same every epoch, a torch teacher runs once
over the training data with forward hooks on the layers the losses name, and those activations are
kept (float32, exactly as the teacher gave them) across epochs and builds. Without it a feature loss
runs the teacher every step, which for a teacher many times the student's size is most of the
training time.

Activations can be large (samples x C x H x W floats), so the cache is used only when all the named
layers together fit `max_mb` (`distill.teacher_feature_cache_mb`); over it the caller runs the
teacher every step, and the note it gets says why. An entry is keyed like a logit-cache entry (the
teacher's content identity, the data's sha256 and sample count, the runtimes) plus the layer names,
written atomically as an uncompressed `.npz` and read with `allow_pickle=False`; an unreadable
entry is a miss and is replaced.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from edgekd.common.fsutil import atomic_writer
from edgekd.common.toolchain import versions
from edgekd.config.models import DistillConfig
from edgekd.data import Split
from edgekd.distill.features import FeatureCapture
from edgekd.distill.teachers import TorchTeacher
from edgekd.pipeline.cache import make_key

FORMAT = 1
RUNTIMES = ("torch", "numpy")
MB = 1024 * 1024


def cache_key(teacher: TorchTeacher, data_sha256: str, num_samples: int, layers: list[str]) -> str:
    return make_key({"teacher": teacher.identity(), "data_sha256": data_sha256, "num_samples": num_samples,
                     "layers": layers, "feature_format": FORMAT, "runtimes": versions(RUNTIMES)})


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"teacher-features-{key}.npz"


@torch.no_grad()
def _run(teacher: TorchTeacher, x: np.ndarray, layers: list[str], rows: int | None = None) -> dict[str, np.ndarray]:
    """The named layers' outputs for the first `rows` rows of x (all when None), batch by batch."""
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    end = len(x) if rows is None else rows
    with teacher.evaluating(), FeatureCapture(teacher.module, layers, source="teacher") as cap:
        for start in range(0, end, teacher.batch_size):
            teacher.module(torch.from_numpy(x[start:min(start + teacher.batch_size, end)]))
            for layer in layers:
                parts[layer].append(cap.features[layer].numpy().astype(np.float32, copy=True))
    return {layer: np.concatenate(chunks) for layer, chunks in parts.items()}


def feature_mb(teacher: TorchTeacher, x: np.ndarray, layers: list[str]) -> float:
    """MB that the named layers' float32 outputs take for every row of x (from a one-row forward)."""
    one = _run(teacher, x, layers, rows=1)
    return sum(math.prod(a.shape[1:]) for a in one.values()) * 4 * len(x) / MB


def _read(path: Path, layers: list[str], num_samples: int) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            features = {layer: npz[f"f{i}"] for i, layer in enumerate(layers)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if any(a.dtype != np.float32 or a.ndim < 2 or a.shape[0] != num_samples for a in features.values()):
        return None
    return features


def cached_teacher_features(teacher: TorchTeacher, x: np.ndarray, layers: list[str], cache_dir: Path, data_sha256: str,
                            max_mb: float) -> tuple[dict[str, np.ndarray] | None, str]:
    """The teacher's outputs at `layers` for every row of `x` (layer -> [N, ...] float32) and a note
    on where they came from; (None, why) when they would take more than `max_mb`, and the teacher
    must run every step.

    `x` must be the inputs exactly as every epoch sees them (no augmentation) and `data_sha256` must
    name them."""
    layers = list(dict.fromkeys(layers))
    size = feature_mb(teacher, x, layers)
    if size > max_mb:
        return None, (f"teacher run every step: its features at {', '.join(layers)} would take {size:,.0f} MB, over "
                      f"distill.teacher_feature_cache_mb = {max_mb:g}")
    path = cache_path(cache_dir, cache_key(teacher, data_sha256, len(x), layers))
    if path.is_file():
        cached = _read(path, layers, len(x))
        if cached is not None:
            return cached, f"teacher features ({size:,.0f} MB) from the cache (computed in an earlier build)"
    features = _run(teacher, x, layers)
    with atomic_writer(path) as fh:  # streamed: no in-memory copy of up to max_mb
        np.savez(fh, **{f"f{i}": features[layer] for i, layer in enumerate(layers)})
    return features, f"teacher features ({size:,.0f} MB) computed once and cached"


def features_for_training(teacher: TorchTeacher, split: Split, layers: list[str], cfg: DistillConfig,
                          cache_root: Path) -> tuple[dict[str, np.ndarray] | None, str]:
    """What a distillation on `split` gets for the teacher's `layers`: cached features when `cfg`
    allows it (teacher_logit_cache on and a non-zero teacher_feature_cache_mb) and they fit, else
    None (the teacher runs every step); with a note on which and why."""
    if not (cfg.teacher_logit_cache and cfg.teacher_feature_cache_mb > 0):
        return None, "teacher run every step for its features"
    return cached_teacher_features(teacher, split.x, layers, Path(cache_root) / "teacher-features", split.sha256(),
                                   cfg.teacher_feature_cache_mb)
