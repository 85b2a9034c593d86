"""Training-time augmentation of the train split ([data] augment in the project).

A batch is a dict of named tensors: the image under "input" (NCHW float), "labels" (int64), maybe
"index". An augmentation is a callable `(batch, generator) -> batch` that returns a new dict and
never changes the tensors it was given. With any augmentation the teacher must run on the same
augmented view as the student every step ("function matching", Beyer et al. 2022): the
teacher-logit cache, keyed by sample index, no longer describes what the student sees.

Built-ins (registered by name with `register`): random_crop, hflip, mixup. Anything else is a
"package.module:function" called as `function(batch, generator, **params)`.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekd.common.lazy import LazyModule
from edgekd.config.models import AugmentSpec
from edgekd.errors import ConfigError, DataError

torch = LazyModule("torch")  # imported on first use: a cached rebuild keys on the augmentations without loading torch
F = LazyModule("torch.nn.functional")
Batch = dict[str, "torch.Tensor"]
AugmentFn = Callable[[Batch, "torch.Generator"], Batch]
INPUT = "input"
LABELS = "labels"
LABELS_MIX = "labels_mix"
MIX_LAMBDA = "mix_lambda"

P = TypeVar("P", bound=BaseModel)
Apply = Callable[[Batch, "torch.Generator", P], Batch]  # a built-in: (batch, generator, validated params)


class Params(BaseModel):
    """Base of the built-ins' parameters: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Registered(Generic[P]):
    """A built-in augmentation: its name, its parameter model and `apply(batch, generator, params)`."""

    name: str
    params: type[P]
    apply: Apply[P]


AUGMENTATIONS: dict[str, Registered[Any]] = {}


def register(name: str, params: type[P]) -> Callable[[Apply[P]], Apply[P]]:
    """Decorator: register `apply(batch, generator, params)` as the built-in `name`."""

    def wrap(apply: Apply[P]) -> Apply[P]:
        if name in AUGMENTATIONS:
            raise ValueError(f"augmentation '{name}' is registered twice")
        AUGMENTATIONS[name] = Registered(name, params, apply)
        return apply

    return wrap


# ---------------------------------------------------------------- helpers shared by the built-ins


def image(batch: Batch, who: str) -> torch.Tensor:
    """The batch's NCHW floating-point "input"; a DataError says what `who` needed instead."""
    x = batch.get(INPUT)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{who} needs a tensor named '{INPUT}', the batch has {sorted(batch)}")
    if x.dim() != 4 or not x.is_floating_point():
        raise DataError(f"{who} needs an NCHW floating-point '{INPUT}', got shape {tuple(x.shape)} {x.dtype}",
                        "image augmentations apply to image tasks only")
    return x


# ---------------------------------------------------------------- built-ins


class RandomCropParams(Params):
    padding: int = Field(4, ge=0, description="pixels added on every side before cropping back")
    mode: Literal["reflect", "zero"] = "reflect"


@register("random_crop", RandomCropParams)
def random_crop(batch: Batch, generator: torch.Generator, params: RandomCropParams) -> Batch:
    """Pad by `padding` pixels, then crop back to the original size at a random offset per sample
    (one gather for the whole batch)."""
    x = image(batch, "random_crop")
    pad = params.padding
    if pad == 0:
        return dict(batch)
    n, _, h, w = x.shape
    if params.mode == "reflect" and pad >= min(h, w):
        raise DataError(f"reflect padding of {pad} needs images larger than {pad} pixels, got {h}x{w}",
                        "lower 'padding' or use mode = 'zero'")
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if params.mode == "reflect" else "constant")
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=generator.device).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # [N, H]
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # [N, W]
    samples = torch.arange(n, device=x.device)[:, None, None]
    crops = padded.permute(0, 2, 3, 1)[samples, rows[:, :, None], cols[:, None, :]]  # [N, H, W, C]
    return {**batch, INPUT: crops.permute(0, 3, 1, 2).contiguous()}


class HflipParams(Params):
    p: float = Field(0.5, ge=0, le=1, description="probability that a sample is mirrored")


@register("hflip", HflipParams)
def hflip(batch: Batch, generator: torch.Generator, params: HflipParams) -> Batch:
    """Mirror each sample left-right with probability `p`, independently."""
    x = image(batch, "hflip")
    chosen = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < params.p
    return {**batch, INPUT: torch.where(chosen[:, None, None, None], x.flip(-1), x)}


class MixupParams(Params):
    alpha: float = Field(0.2, gt=0, description="lambda ~ Beta(alpha, alpha)")
    per_sample: bool = Field(False, description="one lambda per sample instead of one per batch")


@register("mixup", MixupParams)
def mixup(batch: Batch, generator: torch.Generator, params: MixupParams) -> Batch:
    """input <- lam * input + (1 - lam) * input[perm]. "labels" stay; "labels_mix" (labels[perm]) and
    "mix_lambda" (0-d, or [N] with per_sample) are added so a task loss can mix its two targets.
    KD losses need nothing: teacher and student see the same mixed input."""
    x = batch.get(INPUT)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 1:
        raise DataError(f"mixup needs a floating-point tensor named '{INPUT}' with a batch axis")
    if LABELS_MIX in batch or MIX_LAMBDA in batch:
        raise DataError("the batch is already mixed (it has 'labels_mix' / 'mix_lambda')", "list mixup once")
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    draws = np.random.default_rng(seed).beta(params.alpha, params.alpha, size=n if params.per_sample else None)
    lam = torch.as_tensor(draws, dtype=torch.float32, device=x.device)
    weight = lam.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) if params.per_sample else lam.to(x.dtype)
    out = {**batch, INPUT: weight * x + (1 - weight) * x[perm], MIX_LAMBDA: lam}
    if isinstance(batch.get(LABELS), torch.Tensor):
        out[LABELS_MIX] = batch[LABELS][perm]
    return out


# ---------------------------------------------------------------- composition


@dataclass(frozen=True)
class Step:
    """One configured augmentation: where it came from (`key`), what it is and its parameters."""

    key: str
    name: str
    params: dict[str, Any]
    fn: AugmentFn

    def describe(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        try:
            out = self.fn(batch, generator)
        except DataError as exc:
            raise DataError(f"{self.key} {self.describe()}: {exc}", exc.hint) from None
        if not isinstance(out, dict):
            raise DataError(f"{self.key} {self.describe()} returned {type(out).__name__}, not a dict of tensors",
                            "an augmentation returns a new batch dict")
        return out


class Augment:
    """The project's augmentations, applied in order to each training batch."""

    def __init__(self, steps: Sequence[Step]) -> None:
        if not steps:
            raise ValueError("an Augment needs at least one step (build_augment returns None for none)")
        self.steps: tuple[Step, ...] = tuple(steps)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        for step in self.steps:
            batch = step(batch, generator)
        return batch

    def describe(self) -> str:
        """For the distill notes, e.g. "random_crop(padding=2, mode='reflect'), hflip(p=0.5)"."""
        return ", ".join(step.describe() for step in self.steps)

    def identity(self) -> dict[str, Any]:
        """A stable, JSON-able description for cache keys (a custom function by its name only)."""
        return {"augment": [{"name": s.name, "params": dict(sorted(s.params.items()))} for s in self.steps]}


def build_augment(specs: Sequence[AugmentSpec], key: str = "data.augment") -> Augment | None:
    """The configured augmentations composed in order, or None when there are none. Errors name
    `key[i]`: an unknown name, parameters the augmentation does not take, a function that does not import."""
    if not specs:
        return None
    return Augment([build_step(spec, f"{key}[{i}]") for i, spec in enumerate(specs)])


def build_step(spec: AugmentSpec, key: str) -> Step:
    """One configured augmentation (see build_augment)."""
    if ":" in spec.name:
        return custom_step(spec, key)
    entry = AUGMENTATIONS.get(spec.name)
    if entry is None:
        raise ConfigError(f"{key}: unknown augmentation '{spec.name}'",
                          f"use one of {sorted(AUGMENTATIONS)} or a 'package.module:function'")
    try:
        params = entry.params.model_validate(spec.params)
    except ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{key}.params ({spec.name}): {problems}",
                          f"{spec.name} takes {sorted(entry.params.model_fields)}") from None
    apply = entry.apply
    return Step(key, spec.name, params.model_dump(), lambda batch, gen: apply(batch, gen, params))


def custom_step(spec: AugmentSpec, key: str) -> Step:
    """A 'package.module:function' augmentation; its params must fit its signature."""
    fn = resolve_function(spec.name, f"{key}.name")
    params = dict(spec.params)
    try:
        inspect.signature(fn).bind(None, None, **params)
    except TypeError as exc:
        raise ConfigError(f"{key}.params ({spec.name}): {exc}",
                          "an augmentation is called as function(batch, generator, **params)") from None
    except ValueError:  # no signature to inspect (some builtins): let the call say
        pass
    return Step(key, spec.name, params, lambda batch, gen: fn(batch, gen, **params))


def resolve_function(spec: str, key: str) -> Callable[..., Any]:
    """The callable a 'package.module:function' names. The resolver is imported here, lazily:
    edgekd.factories is moving to edgekd.common.factories (drop the fallback once it has)."""
    try:
        from edgekd.common.factories import resolve
    except ImportError:
        from edgekd.factories import resolve  # type: ignore[no-redef]
    return resolve(spec, key, "project")
