"""Two builds sharing a cache write the same teacher-logit or teacher-feature entry at once: each
entry appears by one rename, the first writer's is kept, neither corrupts the other, nothing is left."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_feature_cache import LAYERS, source, teacher  # noqa: E402
from test_logit_cache import Counting  # noqa: E402
from test_logit_cache import source as logit_source  # noqa: E402

from edgekd.common.modes import default_mode  # noqa: E402
from edgekd.distill import feature_cache, logit_cache  # noqa: E402


def interleaved(monkeypatch: pytest.MonkeyPatch, module: Any, second_writer: Any) -> None:
    """Make `module.write_rows` run `second_writer()` (the other build, to the end) before writing its own rows."""
    real, done = module.write_rows, []

    def write_rows(*args: Any, **kwargs: Any) -> None:
        if not done:
            done.append(True)
            second_writer()
        real(*args, **kwargs)
    monkeypatch.setattr(module, "write_rows", write_rows)


def test_feature_cache_writers_meet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.random.default_rng(0).standard_normal((40, 1, 6, 6)).astype(np.float32)
    other: dict[str, np.ndarray] = {}

    def second() -> None:
        features, _ = feature_cache.cached_teacher_features(teacher(), source(x), LAYERS, tmp_path, max_mb=10)
        other.update({k: np.array(v) for k, v in features.items()})
    interleaved(monkeypatch, feature_cache, second)
    first, how = feature_cache.cached_teacher_features(teacher(), source(x), LAYERS, tmp_path, max_mb=10)
    assert "computed once" in how
    for layer in LAYERS:
        np.testing.assert_array_equal(first[layer], other[layer])
    [entry] = list(tmp_path.iterdir())  # one entry, no temp folder of the losing writer
    assert entry.name.startswith("teacher-features-")
    assert stat.S_IMODE(entry.stat().st_mode) == default_mode(folder=True)


@pytest.mark.parametrize("k", [None, 3])
def test_logit_cache_writers_meet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int | None) -> None:
    logits = np.random.default_rng(0).standard_normal((20, 6)) * 3
    other = []
    interleaved(monkeypatch, logit_cache, lambda: other.append(
        np.array(logit_cache.cached_teacher_logits(Counting(logits), logit_source(), tmp_path, k=k)[0])))
    first, hit = logit_cache.cached_teacher_logits(Counting(logits), logit_source(), tmp_path, k=k)
    assert not hit
    np.testing.assert_array_equal(np.array(first), other[0])
    [entry] = list(tmp_path.iterdir())
    assert entry.name.startswith("teacher-logits-")
    assert stat.S_IMODE(entry.stat().st_mode) == default_mode()
    again, hit = logit_cache.cached_teacher_logits(Counting(logits), logit_source(), tmp_path, k=k)
    assert hit
    np.testing.assert_array_equal(np.array(again), other[0])
