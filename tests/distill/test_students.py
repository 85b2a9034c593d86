"""edgekd/distill/students.py: the student-family registry, walked over every entry."""
from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from edgekd.common.factories import call  # noqa: E402
from edgekd.distill.students import (  # noqa: E402
    FAMILIES,
    _make_divisible,
    build_student,
    describe,
    register_family,
)
from edgekd.distill.trainer import count_macs, count_params  # noqa: E402
from edgekd.errors import ConfigError  # noqa: E402

SHAPES = [(1, 8, 8), (1, 28, 28)]  # digits, Fashion-MNIST


@pytest.fixture(autouse=True)
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Batch-1 forwards of tiny students; on a busy host OpenMP's spinning threads slow them 100x."""
    from edgekd.common.toolchain import torch_threads

    with torch_threads(1):
        yield


def test_shipped_families() -> None:
    assert {"plain_cnn", "mobilenet_v2"} <= set(FAMILIES)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_builds_and_runs(family: str, shape: tuple[int, int, int]) -> None:
    width, depth = FAMILIES[family].tiny
    model = build_student(family, shape, 10, width, depth)
    assert not model.training
    with torch.no_grad():
        assert model(torch.rand(3, *shape)).shape == (3, 10)
    info = describe(model, shape)
    assert info == {"params": count_params(model), "macs": count_macs(model, shape)}
    assert info["params"] > 0 and info["macs"] > 0
    assert info["macs"] < 5_000_000, "the tiny variant must stay tiny (tests build it often)"
    assert FAMILIES[family].summary


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_params_and_macs_grow_with_width_and_depth(family: str) -> None:
    shape = (1, 8, 8)

    def size(width: float, depth: float) -> tuple[int, int]:
        info = describe(build_student(family, shape, 10, width, depth), shape)
        return info["params"], info["macs"]

    def params(width: float, depth: float) -> int:  # count_macs is slow on large members: params only
        return count_params(build_student(family, shape, 10, width, depth))

    for smaller, larger in [((0.25, 0.5), (0.5, 0.5)), ((0.25, 0.5), (0.25, 1.0)), ((0.25, 1.0), (0.25, 2.0))]:
        small, large = size(*smaller), size(*larger)
        assert small[0] < large[0] and small[1] < large[1], (smaller, small, larger, large)
    assert params(0.5, 1.0) < params(1.0, 1.0) < params(1.4, 1.0)
    assert params(1.0, 0.5) < params(1.0, 1.0) < params(1.0, 2.0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_project_factory_takes_keyword_args_from_a_config(family: str) -> None:
    args = {"input_shape": [1, 28, 28], "num_classes": 7, "width": FAMILIES[family].tiny[0], "depth": FAMILIES[family].tiny[1]}
    model = call(f"edgekd.distill.students:{family}", args, "student.factory", "edgekd.toml")
    with torch.no_grad():
        assert model(torch.rand(1, 1, 28, 28)).shape == (1, 7)


def test_duplicate_registration_is_an_error() -> None:
    def other(input_shape, num_classes, width=1.0, depth=1.0):  # type: ignore[no-untyped-def]
        raise AssertionError("never built")

    before = dict(FAMILIES)
    with pytest.raises(ConfigError, match="'plain_cnn' is already registered"):
        register_family("plain_cnn")(other)
    assert FAMILIES == before
    try:
        assert register_family("test_only_family")(other) is other  # the factory itself is returned
        with pytest.raises(ConfigError, match="already registered"):
            register_family("test_only_family")(other)
    finally:
        FAMILIES.pop("test_only_family", None)


def test_unknown_family_and_bad_args_are_user_errors() -> None:
    with pytest.raises(ConfigError, match="unknown student family 'mobilenet_v3'") as exc:
        build_student("mobilenet_v3", (1, 8, 8), 10)
    assert "mobilenet_v2" in exc.value.hint
    with pytest.raises(ConfigError, match="input_shape"):
        build_student("plain_cnn", (8, 8), 10)
    with pytest.raises(ConfigError, match="width must be a number > 0"):
        build_student("mobilenet_v2", (1, 8, 8), 10, width=0)
    with pytest.raises(ConfigError, match="num_classes"):
        build_student("plain_cnn", (1, 8, 8), 0)


def test_plain_cnn_channels_are_multiples_of_four_and_at_least_four() -> None:
    model = build_student("plain_cnn", (1, 8, 8), 10, width=0.1, depth=0.3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3  # depth 0.3 -> ceil(2 x 0.3) = 1 block per stage
    assert [c.out_channels for c in convs] == [4, 4, 8]
    wide = build_student("plain_cnn", (1, 8, 8), 10, width=0.75)
    assert [c.out_channels for c in wide.modules() if isinstance(c, torch.nn.Conv2d)] == [12, 12, 24, 24, 48, 48]


def test_make_divisible_matches_the_reference_rule() -> None:
    assert _make_divisible(32 * 1.0) == 32
    assert _make_divisible(16 * 0.25) == 8  # never below the divisor
    assert _make_divisible(32 * 0.35) == 16  # 11.2 rounds to 8, more than 10% down: one step up
    assert _make_divisible(24 * 0.75) == 24  # 18 rounds to 16, more than 10% down: one step up
    assert _make_divisible(64 * 0.35) == 24  # 22.4 -> 24 (nearest multiple)
    assert _make_divisible(96 * 1.4) == 136  # 134.4 -> 136


def test_mobilenet_v2_blocks() -> None:
    model = build_student("mobilenet_v2", (1, 28, 28), 10)
    blocks = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
    assert len(blocks) == 1 + 2 + 3 + 4 + 3
    assert sum(b.residual for b in blocks) == 0 + 1 + 2 + 3 + 2  # stride 1 and same channels only
    first = [m for m in blocks[0].block if isinstance(m, torch.nn.Conv2d)]
    assert len(first) == 2 and first[0].groups == first[0].in_channels  # t = 1: no 1x1 expansion
    second = [m for m in blocks[1].block if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in second] == [(1, 1), (3, 3), (1, 1)]
    assert second[0].out_channels == 6 * second[0].in_channels and second[1].groups == second[1].in_channels
    assert not any(isinstance(m, torch.nn.ReLU6) for m in blocks[1].block[-2:])  # linear bottleneck
    features = model[:-4]  # up to the global pooling: total stride 4
    with torch.no_grad():
        assert features(torch.zeros(1, 1, 28, 28)).shape[-2:] == (7, 7)
        assert features(torch.zeros(1, 1, 8, 8)).shape[-2:] == (2, 2)


def test_importing_the_registry_does_not_import_torch() -> None:
    code = "import sys, edgekd.distill.students as s; assert s.FAMILIES; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
