"""edgekd/data/augment.py: the built-ins (random_crop, hflip, mixup), composition, custom
'package.module:function' augmentations, config errors, and [data] augment in the project config."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from edgekd.config.models import AugmentSpec, DataConfig, Project
from edgekd.data.augment import AUGMENTATIONS, Augment, build_augment
from edgekd.errors import ConfigError, DataError

HERE = Path(__file__).parent


@pytest.fixture
def custom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes tests/data/augment_custom.py importable as 'augment_custom'."""
    monkeypatch.syspath_prepend(str(HERE))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 8, c: int = 3, h: int = 6, w: int = 5, seed: int = 1) -> dict[str, torch.Tensor]:
    x = torch.rand(n, c, h, w, generator=gen(seed))
    return {"input": x, "labels": torch.arange(n, dtype=torch.int64), "index": torch.arange(100, 100 + n)}


def one(name: str, **params: Any) -> Augment:
    augment = build_augment([AugmentSpec(name=name, params=params)])
    assert augment is not None
    return augment


def clone(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in batch.items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- every registered augmentation


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_builtin_keeps_shape_does_not_mutate_and_is_reproducible(name: str) -> None:
    batch = images()
    before = clone(batch)
    out = one(name)(batch, gen(3))
    assert same(batch, before), "the input batch was changed"
    assert out is not batch
    assert out["input"].shape == batch["input"].shape and out["input"].dtype == torch.float32
    assert torch.equal(out["labels"], batch["labels"]) and torch.equal(out["index"], batch["index"])
    assert same(out, one(name)(images(), gen(3)))


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_builtin_rejects_unknown_params_naming_it(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"data\.augment\[0\]\.params \({name}\): 'bogus'"):
        build_augment([AugmentSpec(name=name, params={"bogus": 1})])


# ---------------------------------------------------------------- random_crop


def windows_of(padded: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
    return [padded[:, i:i + h, j:j + w] for i in range(padded.shape[1] - h + 1) for j in range(padded.shape[2] - w + 1)]


def test_crop_with_padding_0_is_identity() -> None:
    batch = images()
    assert torch.equal(one("random_crop", padding=0)(batch, gen())["input"], batch["input"])


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_crop_is_a_window_of_the_padded_image_at_an_offset_per_sample(mode: str) -> None:
    batch = images(n=16)
    out = one("random_crop", padding=2, mode=mode)(batch, gen())["input"]
    torch_mode = "constant" if mode == "zero" else "reflect"
    padded = torch.nn.functional.pad(batch["input"], (2, 2, 2, 2), mode=torch_mode)
    offsets = set()
    for i in range(16):
        matches = [k for k, win in enumerate(windows_of(padded[i], 6, 5)) if torch.equal(win, out[i])]
        assert matches, f"sample {i} is not a crop of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1, "every sample got the same offset"


def test_crop_same_image_differs_across_samples_and_seeds() -> None:
    x = torch.rand(1, 1, 6, 6, generator=gen()).expand(8, 1, 6, 6).contiguous()
    crop = one("random_crop", padding=2, mode="zero")
    a = crop({"input": x}, gen(0))["input"]
    assert any(not torch.equal(a[0], a[i]) for i in range(1, 8))
    assert not torch.equal(a, crop({"input": x}, gen(1))["input"])


def test_zero_padding_brings_zeros_and_reflect_keeps_a_constant_image() -> None:
    ones = {"input": torch.ones(32, 1, 4, 4)}
    assert (one("random_crop", padding=2, mode="zero")(ones, gen())["input"] == 0).any()
    assert torch.equal(one("random_crop", padding=2, mode="reflect")(ones, gen())["input"], ones["input"])


def test_reflect_padding_too_large_for_the_image_names_the_entry() -> None:
    with pytest.raises(DataError, match=r"data\.augment\[0\] random_crop\(padding=6.*6x5"):
        one("random_crop", padding=6)(images(), gen())


def test_image_augmentations_need_nchw_float_input() -> None:
    with pytest.raises(DataError, match=r"hflip needs an NCHW floating-point 'input'"):
        one("hflip")({"input": torch.zeros(4, 10)}, gen())
    with pytest.raises(DataError, match=r"needs a tensor named 'input'"):
        one("random_crop")({"input_ids": torch.zeros(4, 10, dtype=torch.int64)}, gen())


# ---------------------------------------------------------------- hflip


def test_hflip_flips_exactly_the_chosen_samples_at_rate_p() -> None:
    batch = images(n=2000, c=1, h=2, w=3)
    out = one("hflip", p=0.3)(batch, gen())["input"]
    x = batch["input"]
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all()), "every sample is either exactly mirrored or exactly kept"
    assert 0.25 < flipped.float().mean().item() < 0.35


@pytest.mark.parametrize("p, expect", [(0.0, "kept"), (1.0, "flipped")])
def test_hflip_p_0_and_1(p: float, expect: str) -> None:
    batch = images()
    out = one("hflip", p=p)(batch, gen())["input"]
    assert torch.equal(out, batch["input"] if expect == "kept" else batch["input"].flip(-1))


# ---------------------------------------------------------------- mixup


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_mixes_inputs_convexly_with_a_permutation(per_sample: bool) -> None:
    batch = images(n=16)
    out = one("mixup", alpha=0.4, per_sample=per_sample)(batch, gen())
    lam, perm = out["mix_lambda"], out["labels_mix"]  # labels are 0..15, so labels_mix is the permutation
    assert lam.shape == ((16,) if per_sample else ())
    assert bool(((lam >= 0) & (lam <= 1)).all())
    assert sorted(perm.tolist()) == list(range(16)) and not torch.equal(perm, batch["labels"])
    weight = lam.reshape(-1, 1, 1, 1) if per_sample else lam
    torch.testing.assert_close(out["input"], weight * batch["input"] + (1 - weight) * batch["input"][perm])
    assert torch.equal(out["labels"], batch["labels"])


def test_mixup_lambda_follows_alpha() -> None:
    batch = images(n=4000, c=1, h=1, w=1)
    small = one("mixup", alpha=0.1, per_sample=True)(batch, gen())["mix_lambda"]
    large = one("mixup", alpha=10.0, per_sample=True)(batch, gen())["mix_lambda"]
    assert ((small < 0.1) | (small > 0.9)).float().mean() > 0.6  # Beta(0.1, 0.1) piles up at 0 and 1
    assert abs(large.mean().item() - 0.5) < 0.02 and large.std().item() < 0.15


def test_mixup_without_labels_and_mixed_twice() -> None:
    out = one("mixup")({"input": torch.rand(4, 3)}, gen())
    assert set(out) == {"input", "mix_lambda"}
    with pytest.raises(DataError, match="already mixed"):
        one("mixup")(out, gen())


def test_mixup_alpha_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"data\.augment\[0\]\.params \(mixup\): 'alpha'"):
        one("mixup", alpha=0)


# ---------------------------------------------------------------- composition, custom functions


def test_composition_applies_in_order(custom: None) -> None:
    batch = {"input": torch.ones(2, 1, 2, 2)}
    first_scale = build_augment([AugmentSpec(name="augment_custom:scale", params={"factor": 3.0}),
                                 AugmentSpec(name="augment_custom:shift")])
    first_shift = build_augment([AugmentSpec(name="augment_custom:shift"),
                                 AugmentSpec(name="augment_custom:scale", params={"factor": 3.0})])
    assert first_scale is not None and first_shift is not None
    assert torch.equal(first_scale(batch, gen())["input"], torch.full((2, 1, 2, 2), 4.0))
    assert torch.equal(first_shift(batch, gen())["input"], torch.full((2, 1, 2, 2), 6.0))
    assert torch.equal(batch["input"], torch.ones(2, 1, 2, 2))


def test_builtins_compose_with_a_shared_generator() -> None:
    specs = [AugmentSpec(name="random_crop", params={"padding": 1}), AugmentSpec(name="hflip"),
             AugmentSpec(name="mixup", params={"alpha": 0.2})]
    augment = build_augment(specs)
    assert augment is not None
    out = augment(images(), gen(5))
    assert set(out) == {"input", "labels", "index", "labels_mix", "mix_lambda"}
    assert same(out, augment(images(), gen(5)))
    assert not torch.equal(out["input"], augment(images(), gen(6))["input"])


def test_describe_and_identity() -> None:
    augment = build_augment([AugmentSpec(name="random_crop", params={"padding": 2}), AugmentSpec(name="hflip"),
                             AugmentSpec(name="mixup", params={"alpha": 0.2})])
    assert augment is not None
    assert augment.describe() == "random_crop(padding=2, mode='reflect'), hflip(p=0.5), mixup(alpha=0.2, per_sample=False)"
    assert augment.identity() == {"augment": [
        {"name": "random_crop", "params": {"mode": "reflect", "padding": 2}},
        {"name": "hflip", "params": {"p": 0.5}},
        {"name": "mixup", "params": {"alpha": 0.2, "per_sample": False}},
    ]}
    explicit = build_augment([AugmentSpec(name="random_crop", params={"mode": "reflect", "padding": 2}),
                              AugmentSpec(name="hflip", params={"p": 0.5}), AugmentSpec(name="mixup", params={"alpha": 0.2})])
    assert explicit is not None and explicit.identity() == augment.identity()


def test_no_specs_means_no_augment() -> None:
    assert build_augment([]) is None


def test_custom_function_gets_its_params_and_is_described(custom: None) -> None:
    augment = build_augment([AugmentSpec(name="augment_custom:shift", params={"amount": 0.5})])
    assert augment is not None
    assert torch.equal(augment({"input": torch.zeros(2, 2)}, gen())["input"], torch.full((2, 2), 0.5))
    assert augment.describe() == "augment_custom:shift(amount=0.5)"


@pytest.mark.parametrize("name, params, match", [
    ("no_such_aug", {}, r"data\.augment\[1\]: unknown augmentation 'no_such_aug'"),
    ("no_such_module_xyz:fn", {}, r"data\.augment\[1\]\.name.*cannot import module 'no_such_module_xyz'"),
    ("augment_custom:missing", {}, r"data\.augment\[1\]\.name.*no callable 'missing'"),
    ("augment_custom:NOT_CALLABLE", {}, r"data\.augment\[1\]\.name.*no callable 'NOT_CALLABLE'"),
    ("augment_custom:shift", {"amout": 1}, r"data\.augment\[1\]\.params \(augment_custom:shift\):.*'amout'"),
    ("random_crop", {"padding": -1}, r"data\.augment\[1\]\.params \(random_crop\): 'padding'"),
    ("hflip", {"p": 1.5}, r"data\.augment\[1\]\.params \(hflip\): 'p'"),
])
def test_config_errors_name_the_entry(custom: None, name: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build_augment([AugmentSpec(name="hflip"), AugmentSpec(name=name, params=params)])
    assert "\n" not in info.value.one_line()


def test_custom_function_must_return_a_dict(custom: None) -> None:
    augment = build_augment([AugmentSpec(name="augment_custom:not_a_dict")])
    assert augment is not None
    with pytest.raises(DataError, match=r"data\.augment\[0\] augment_custom:not_a_dict\(\) returned list"):
        augment({"input": torch.zeros(2, 2)}, gen())


# ---------------------------------------------------------------- [data] augment in the project


PROJECT_TOML = """
name = "p"
[teacher]
factory = "pkg.mod:teacher"
checkpoint = "t.safetensors"
[student]
factory = "pkg.mod:student"
[data]
factory = "pkg.data:load"
augment = [{name = "random_crop", params = {padding = 2}}, {name = "hflip"}, {name = "pkg.aug:cutout", params = {size = 8}}]
"""


def test_project_config_parses_data_augment() -> None:
    project = Project.model_validate(tomllib.loads(PROJECT_TOML))
    assert project.data.augment == [AugmentSpec(name="random_crop", params={"padding": 2}), AugmentSpec(name="hflip"),
                                    AugmentSpec(name="pkg.aug:cutout", params={"size": 8})]
    augment = build_augment(project.data.augment[:2])
    assert augment is not None and augment.describe() == "random_crop(padding=2, mode='reflect'), hflip(p=0.5)"
    assert DataConfig(factory="pkg.data:load").augment == []


@pytest.mark.parametrize("entry", [{"name": "bad name"}, {"name": "pkg.mod:"}, {"name": "crop", "p": 1}, {"params": {}}])
def test_project_config_rejects_malformed_augment_entries(entry: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"augment\.0"):
        DataConfig.model_validate({"factory": "pkg.data:load", "augment": [entry]})
