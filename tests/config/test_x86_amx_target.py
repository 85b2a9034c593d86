"""The x86 targets per host class: `--target x86` resolves to the AMX target on AMX hosts, to the
AVX-512 VNNI one on VNNI hosts and to the AVX2 one otherwise (the cpu_flags seam of
edgekd.config.loading replaced); the AMX target validates and carries its recipe and tuning axis."""
from __future__ import annotations

import pytest

from edgekd.config import loading
from edgekd.config.loading import ConfigSearch, builtin_dir, load_model, load_target
from edgekd.config.target import Target

AVX2 = frozenset({"sse2", "avx", "avx2", "fma"})
VNNI = AVX2 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}  # e.g. AMD Zen 4
AMX = VNNI | {"avx512_fp16", "avx_vnni", "amx_bf16", "amx_tile", "amx_int8"}  # e.g. Intel Sapphire Rapids


@pytest.mark.parametrize(("flags", "expected"), [(AMX, "x86-amx"), (VNNI, "x86-avx512-vnni"), (AVX2, "x86-avx2")])
def test_x86_alias_resolves_per_host_class(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], expected: str) -> None:
    monkeypatch.setattr(loading, "cpu_flags", lambda: flags)
    resolved = load_target("x86", ConfigSearch())
    assert resolved.name == expected and resolved.via.startswith("alias 'x86'")


def test_amx_needs_every_amx_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "cpu_flags", lambda: VNNI | {"amx_tile", "amx_bf16"})  # no amx_int8
    assert load_target("x86", ConfigSearch()).name == "x86-avx512-vnni"


def test_amx_target_validates_with_its_recipe_and_figures() -> None:
    target, _ = load_model(builtin_dir("targets") / "x86-amx.toml", Target, "target")
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_vnni"} <= set(target.host.cpu_flags)
    assert "x86" in target.aliases and target.runtime == "onnxruntime-cpu"
    q = target.quantize
    assert (q.activation_type, q.weight_type, q.reduce_range) == ("uint8", "int8", True)  # issue 16's SPR measurement
    # the recipe is measured, not assumed: S8S8 is a tuning candidate beside it
    assert [(r.activation_type, r.reduce_range) for r in target.tune.qdq_recipes] == [("int8", False)]
    assert target.device is not None and target.device.peak_ops_per_cycle_per_core == {"fp32": 64, "int8": 2048}


@pytest.mark.parametrize("name", ["x86-avx2", "x86-avx512-vnni", "x86-amx"])
def test_every_x86_target_tunes_a_second_recipe(name: str) -> None:
    target, _ = load_model(builtin_dir("targets") / f"{name}.toml", Target, "target")
    base = (target.quantize.activation_type, target.quantize.reduce_range)
    assert target.tune.qdq_recipes and all((r.activation_type, r.reduce_range) != base for r in target.tune.qdq_recipes)
