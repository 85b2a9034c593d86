"""edgekd/distill/feature_cache.py: a torch teacher's features run once per (teacher, data, layers),
streamed over the train split and kept across calls and builds as memory-mapped `.npy` files, only
under the size limit; distilling against cached features trains the same student as running the
teacher every step."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from edgekd.data import Split, Splits  # noqa: E402
from edgekd.data.sources import SplitsSource  # noqa: E402
from edgekd.distill.feature_cache import (  # noqa: E402
    cache_key,
    cache_path,
    cached_teacher_features,
    feature_mb,
)
from edgekd.distill.teachers import TorchTeacher  # noqa: E402
from edgekd.errors import ConfigError  # noqa: E402

SHA = "b" * 64
LAYERS = ["1", "3"]


def teacher_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


class Counted:
    """Counts the teacher's forward passes (a forward hook on the module)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        module.register_forward_hook(self._count)

    def _count(self, *_: object) -> None:
        self.calls += 1


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((40, 1, 6, 6)).astype(np.float32)


def source(x: np.ndarray) -> SplitsSource:
    y = np.random.default_rng(1).integers(0, 3, len(x)).astype(np.int64)
    return SplitsSource(Splits(Split(x, y), Split(x[:4], y[:4]), Split(x[:4], y[:4]), 3))


def teacher(batch_size: int = 16) -> TorchTeacher:
    return TorchTeacher(teacher_net(), None, "test teacher", batch_size=batch_size)


def online(module: nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    from edgekd.distill.features import FeatureCapture

    module.eval()
    with torch.no_grad(), FeatureCapture(module, LAYERS) as cap:
        module(torch.from_numpy(x))
        return {k: v.numpy().copy() for k, v in cap.features.items()}


def test_miss_then_hit_gives_the_teachers_own_features(tmp_path: Path, x: np.ndarray) -> None:
    t = teacher()
    counted = Counted(t.module)
    first, how1 = cached_teacher_features(t, source(x), LAYERS, tmp_path, max_mb=10)
    runs_after_miss = counted.calls
    second, how2 = cached_teacher_features(teacher(), source(x), LAYERS, tmp_path, max_mb=10)  # a new instance, same identity
    assert "computed once and cached" in how1 and "from the cache" in how2
    assert runs_after_miss == 1 + 3  # a one-row probe for the size, then 40 rows in batches of 16
    expected = online(teacher_net(), x)
    for layer in LAYERS:
        assert isinstance(first[layer], np.memmap) and isinstance(second[layer], np.memmap)  # on disk, mapped
        assert first[layer].dtype == np.float32 and first[layer].shape == expected[layer].shape
        np.testing.assert_allclose(first[layer], expected[layer], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(first[layer], second[layer])  # a cold and a warm build see the same targets


def test_the_size_limit_sends_the_teacher_back_to_every_step(tmp_path: Path, x: np.ndarray) -> None:
    size = feature_mb(teacher(), source(x), LAYERS)
    assert size == pytest.approx(40 * (4 * 6 * 6 + 6 * 3 * 3) * 4 / 2**20)  # float32, all rows, both layers
    features, how = cached_teacher_features(teacher(), source(x), LAYERS, tmp_path, max_mb=size / 2)
    assert features is None and "teacher run every step" in how and "teacher_feature_cache_mb" in how
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_key_covers_teacher_data_and_layers(x: np.ndarray) -> None:
    t = teacher()
    base = cache_key(t, SHA, len(x), LAYERS)
    changed = teacher_net()
    with torch.no_grad():
        changed[0].bias.add_(1.0)
    assert cache_key(TorchTeacher(changed, None, "test teacher"), SHA, len(x), LAYERS) != base
    assert cache_key(t, "c" * 64, len(x), LAYERS) != base
    assert cache_key(t, SHA, len(x) - 1, LAYERS) != base
    assert cache_key(t, SHA, len(x), ["1"]) != base


def test_an_unreadable_entry_is_recomputed(tmp_path: Path, x: np.ndarray) -> None:
    t = teacher()
    first, _ = cached_teacher_features(t, source(x), LAYERS, tmp_path, max_mb=10)
    first = {k: np.array(v) for k, v in first.items()}
    path = cache_path(tmp_path, cache_key(t, source(x).fingerprint(), len(x), LAYERS)) / "f1.npy"
    path.write_bytes(path.read_bytes()[:100])  # truncated outside edgekd
    again, how = cached_teacher_features(t, source(x), LAYERS, tmp_path, max_mb=10)
    assert "computed once" in how
    np.testing.assert_array_equal(again["3"], first["3"])
    assert [p.name for p in tmp_path.iterdir()] == [path.parent.name]  # replaced, no temp folder left


def test_a_missing_layer_names_the_teacher(tmp_path: Path, x: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="teacher has no submodule '9'"):
        cached_teacher_features(teacher(), source(x), ["9"], tmp_path, max_mb=10)


def test_distilling_on_cached_features_equals_running_the_teacher(tmp_path: Path, x: np.ndarray) -> None:
    from edgekd.config.models import DistillConfig
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.streaming import TrainData
    from edgekd.distill.teaching import Teaching
    from edgekd.distill.trainer import build_objective, distill
    from edgekd.tasks import get_task

    cfg = DistillConfig(epochs=2, batch_size=8, lr=1e-2, losses=[
        {"name": "hinton"}, {"name": "fitnet", "params": {"student_layer": "1", "teacher_layer": "3"}}])
    data = TrainData(source(x), get_task("image-classification", input_shape=(1, 6, 6), num_classes=3))
    t = teacher()
    logits, _ = cached_teacher_logits(t, data.source, tmp_path / "logits")
    features, _ = cached_teacher_features(t, data.source, ["3"], tmp_path, max_mb=10)
    students = []
    for teaching in (Teaching(TorchTeacher(teacher_net(), None, "t")), Teaching(None, logits, features)):
        torch.manual_seed(1)  # with cached features (and logits) no teacher is needed
        student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        losses = distill(student, data, cfg, build_objective(cfg), teaching)
        students.append((student, losses))
    (online_student, online_losses), (cached_student, cached_losses) = students
    np.testing.assert_allclose(cached_losses, online_losses, rtol=1e-5)
    for a, b in zip(online_student.state_dict().values(), cached_student.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("settings, cached", [({}, True), ({"teacher_feature_cache_mb": 0}, False),
                                              ({"teacher_logit_cache": False}, False)])
def test_the_distill_config_decides(tmp_path: Path, x: np.ndarray, settings: dict, cached: bool) -> None:
    from edgekd.config.models import DistillConfig
    from edgekd.distill.feature_cache import features_for_training

    features, how = features_for_training(teacher(), source(x), LAYERS, DistillConfig(**settings), tmp_path)
    assert (features is not None) == cached
    assert ("computed once and cached" in how) if cached else (how == "teacher run every step for its features")
    assert any(tmp_path.rglob("*.npy")) == cached
