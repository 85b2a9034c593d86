"""Student families: one registry of factories `(input_shape, num_classes, width, depth) -> nn.Module`.

A family is a shape of network with two knobs: `width` scales channels, `depth` scales blocks per
stage (rounded up, at least one). `build_student("mobilenet_v2", (1, 28, 28), 10, width=0.5)` builds
one; each factory is also a project factory, e.g.

    [student]
    factory = "edgekd.distill.students:mobilenet_v2"
    args = { input_shape = [1, 28, 28], num_classes = 10, width = 0.5, depth = 1.0 }

Every family registers a `tiny` (width, depth) that builds in milliseconds, for tests. Families are
registered with `@register_family(name)`; a name registered twice is an error.

torch is imported inside the factories (as in edgekd/examples/digits.py), so that resolving a
project's factory on a fully cached rebuild does not load torch. Activations are not in-place:
torch.export functionalizes in-place ops, and `export_onnx` of mobilenet_v2 (width 1) took 20 s with
in-place ReLU6 and 14 s without on a 2-core host.
"""
from __future__ import annotations

import difflib
import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from edgekd.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

StudentFactory = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class Family:
    name: str
    factory: StudentFactory
    tiny: tuple[float, float]  # (width, depth) of the family's tiny test variant
    summary: str


FAMILIES: dict[str, Family] = {}


def register_family(name: str, *, tiny: tuple[float, float] = (0.25, 0.5)) -> Callable[[StudentFactory], StudentFactory]:
    """Decorator: register `factory` as student family `name` (returned unchanged, so it stays a
    plain module-level function a project can name as "package.module:function")."""

    def add(factory: StudentFactory) -> StudentFactory:
        if name in FAMILIES:
            old = FAMILIES[name].factory
            raise ConfigError(f"student family '{name}' is already registered (by {old.__module__}.{old.__qualname__}); "
                              f"{factory.__module__}.{factory.__qualname__} cannot take the name",
                              "register the new family under another name")
        summary = (factory.__doc__ or "").strip().split("\n", 1)[0]
        FAMILIES[name] = Family(name, factory, tiny, summary)
        return factory

    return add


def build_student(family: str, input_shape: Sequence[int], num_classes: int, width: float = 1.0,
                  depth: float = 1.0) -> nn.Module:
    """The untrained student of `family` at `width` x `depth`, in eval mode."""
    if family not in FAMILIES:
        near = difflib.get_close_matches(family, list(FAMILIES), n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(near)}?" if near else f"known families: {', '.join(sorted(FAMILIES))}"
        raise ConfigError(f"unknown student family '{family}' (known: {', '.join(sorted(FAMILIES))})", hint)
    return FAMILIES[family].factory(input_shape=input_shape, num_classes=num_classes, width=width, depth=depth)


def describe(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """{"params": parameter count, "macs": multiply-accumulates of one batch-1 forward pass}
    (edgekd.distill.trainer.count_params / count_macs)."""
    from edgekd.distill.trainer import count_macs, count_params

    return {"params": count_params(model), "macs": count_macs(model, tuple(input_shape))}


# ---------------------------------------------------------------- shared checks and rounding


def _check_args(family: str, input_shape: Sequence[int], num_classes: int, width: float, depth: float) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ConfigError(f"student '{family}': input_shape must be (channels, height, width) of positive ints, got {list(shape)}",
                          "e.g. input_shape = [1, 28, 28] (batch not included)")
    if not (isinstance(num_classes, numbers.Integral) and not isinstance(num_classes, bool) and num_classes >= 1):
        raise ConfigError(f"student '{family}': num_classes must be a positive int, got {num_classes!r}")
    for key, value in (("width", width), ("depth", depth)):
        if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0 and math.isfinite(value)):
            raise ConfigError(f"student '{family}': {key} must be a number > 0, got {value!r}", "1.0 is the family's base size")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _repeats(base: int, depth: float) -> int:
    """Blocks in a stage: ceil(base x depth), at least 1."""
    return max(1, math.ceil(base * depth - 1e-9))


def _make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to a multiple of `divisor`, never going down by more than 10% (the rule of
    MobileNetV2's reference code, tensorflow/models slim/nets/mobilenet/mobilenet.py, also in torchvision)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


# ---------------------------------------------------------------- plain_cnn

PLAIN_CHANNELS = (16, 32, 64)  # stage channels at width 1.0
PLAIN_BLOCKS = 2  # conv-BN-ReLU blocks per stage at depth 1.0


def _plain_channels(base: int, width: float) -> int:
    """base x width rounded to a multiple of 4, at least 4."""
    return max(4, 4 * round(base * width / 4))


@register_family("plain_cnn")
def plain_cnn(input_shape: Sequence[int], num_classes: int, width: float = 1.0, depth: float = 1.0) -> nn.Module:
    """Three stages of 3x3 conv-BN-ReLU blocks (16, 32, 64 channels x width; 2 blocks x depth), each
    stage followed by 2x2 max-pooling while the feature map is at least 2x2; global average pooling
    and a linear head. 8x8 input: 8 -> 4 -> 2 -> 1; 28x28: 28 -> 14 -> 7 -> 3."""
    from torch import nn

    channels, height, width_px = _check_args("plain_cnn", input_shape, num_classes, width, depth)
    layers: list[nn.Module] = []
    cin, side = channels, min(height, width_px)
    for base in PLAIN_CHANNELS:
        cout = _plain_channels(base, width)
        for _ in range(_repeats(PLAIN_BLOCKS, depth)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        if side >= 2:
            layers.append(nn.MaxPool2d(2))
            side //= 2
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))
    return model.eval()


# ---------------------------------------------------------------- mobilenet_v2

# (expansion t, channels c, repeats n, stride s) per stage: the first five stages of MobileNetV2's
# Table 2 (Sandler et al. 2018). Changed for 8x8..32x32 inputs, where the paper's 224x224 layout
# (total stride 32) would shrink the map to 1x1 after a few blocks: the stem has stride 1 (paper 2)
# and the 64-channel stage stride 1 (paper 2), so the total stride is 4 (8x8 -> 2x2, 28x28 -> 7x7);
# the paper's 160- and 320-channel stages are left out, and the last 1x1 conv has 384 channels
# (paper 1280), 4x the last stage, kept at >= 384 when width < 1 as the paper keeps its 1280.
MBV2_STEM = 32
MBV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 1), (6, 96, 3, 1))
MBV2_LAST = 384
MBV2_DROPOUT = 0.2  # before the classifier, as in the reference code (identity in eval / ONNX)


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    from torch import nn

    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU6()]


@functools.cache
def _inverted_residual_class() -> type:
    """Defined on first use so that importing this module does not import torch."""
    from torch import nn

    class InvertedResidual(nn.Module):
        """1x1 expand (left out when t = 1) -> 3x3 depthwise -> 1x1 linear projection (no activation);
        the input is added back when stride is 1 and the channels match."""

        def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
            super().__init__()
            hidden = int(round(cin * expansion))
            layers: list[nn.Module] = _conv_bn_relu6(cin, hidden, 1) if expansion != 1 else []
            layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
            layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.block = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):  # type: ignore[no-untyped-def]
            return x + self.block(x) if self.residual else self.block(x)

    return InvertedResidual


@register_family("mobilenet_v2")
def mobilenet_v2(input_shape: Sequence[int], num_classes: int, width: float = 1.0, depth: float = 1.0) -> nn.Module:
    """MobileNetV2 inverted residual blocks (ReLU6, linear bottlenecks) for small inputs: 3x3 stem
    (stride 1), stages 16/24/32/64/96 x width (rounded with _make_divisible(.., 8)), repeats 1/2/3/4/3
    x depth, total stride 4, 1x1 conv to 384, global average pooling, dropout, linear head."""
    from torch import nn

    channels, _, _ = _check_args("mobilenet_v2", input_shape, num_classes, width, depth)
    block = _inverted_residual_class()
    cin = _make_divisible(MBV2_STEM * width)
    layers: list[nn.Module] = _conv_bn_relu6(channels, cin, 3, 1)
    for expansion, base, repeats, stride in MBV2_STAGES:
        cout = _make_divisible(base * width)
        for i in range(_repeats(repeats, depth)):
            layers.append(block(cin, cout, stride if i == 0 else 1, expansion))
            cin = cout
    last = _make_divisible(MBV2_LAST * max(1.0, width))
    layers += _conv_bn_relu6(cin, last, 1)
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(MBV2_DROPOUT),
                          nn.Linear(last, num_classes))
    return model.eval()
