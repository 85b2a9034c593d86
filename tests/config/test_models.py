"""edgekd/config/models.py: strict schemas, teacher source rule, recipes, bench bounds."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from edgekd.config.models import (
    BenchConfig,
    Budgets,
    Profile,
    Project,
    Recipe,
    TeacherConfig,
    apply_recipe,
)
from edgekd.config.target import Target

PROJECT: dict[str, Any] = {
    "name": "p",
    "teacher": {"factory": "pkg.mod:teacher", "train": {"epochs": 5}},
    "student": {"factory": "pkg.mod:student", "args": {"width": 4}},
    "data": {"factory": "pkg.data:load"},
}
TARGET: dict[str, Any] = {"description": "t", "runtime": "onnxruntime-cpu", "precisions": ["fp32"]}


def project(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(PROJECT)
    data.update(changes)
    return data


def error_locs(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


# ------------------------------------------------------------------ unknown keys


def test_minimal_project_validates_with_defaults() -> None:
    p = Project.model_validate(PROJECT)
    assert p.teacher.train is not None and p.teacher.train.epochs == 5
    assert p.teacher.checkpoint is None
    assert [loss.name for loss in p.distill.losses] == ["hinton"] and p.distill.alpha == 0.9
    assert p.task.kind == "classification"


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (project(extra=1), ("extra",)),
        (project(distill={"temp": 2.0}), ("distill", "temp")),
        (project(teacher={"factory": "a:b", "train": {"epoch": 3}}), ("teacher", "train", "epoch")),
        (project(student={"factory": "a:b", "argz": {}}), ("student", "argz")),
    ],
)
def test_project_rejects_unknown_keys(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        Project.model_validate(data)
    assert loc in error_locs(info.value)
    assert any(e["type"] == "extra_forbidden" for e in info.value.errors())


def test_target_and_profile_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError) as info:
        Target.model_validate({**TARGET, "session": {"threads": 4}})
    assert ("session", "threads") in error_locs(info.value)
    with pytest.raises(ValidationError) as info:
        Profile.model_validate({"budgets": {"latency_p99_ms": 1.0}})
    assert ("budgets", "latency_p99_ms") in error_locs(info.value)


def test_models_are_frozen() -> None:
    p = Project.model_validate(PROJECT)
    with pytest.raises(ValidationError):
        p.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("factory", ["pkg.mod", "pkg.mod:", ":f", "pkg mod:f", "pkg.mod:f.g", "1pkg:f"])
def test_factory_must_be_module_colon_function(factory: str) -> None:
    with pytest.raises(ValidationError):
        Project.model_validate(project(student={"factory": factory}))


def test_target_needs_known_runtime_and_a_precision() -> None:
    Target.model_validate(TARGET)
    with pytest.raises(ValidationError):
        Target.model_validate({**TARGET, "runtime": "tensorrt"})
    with pytest.raises(ValidationError):
        Target.model_validate({**TARGET, "precisions": []})
    with pytest.raises(ValidationError):
        Target.model_validate({**TARGET, "opset": 12})


def test_tune_space_is_checked_against_the_target() -> None:
    tuned = Target.model_validate({**TARGET, "precisions": ["fp32", "int8"], "tune": {"precisions": ["int8", "fp32"], "intra_op_num_threads": [1, 0]}})
    assert tuned.tune.intra_op_num_threads == [1, 0]
    with pytest.raises(ValidationError, match="must be among the target's precisions"):
        Target.model_validate({**TARGET, "precisions": ["int8"], "tune": {"precisions": ["fp32"]}})
    with pytest.raises(ValidationError, match="thread counts are >= 0"):
        Target.model_validate({**TARGET, "tune": {"intra_op_num_threads": [-1]}})
    with pytest.raises(ValidationError, match="applies to runtime 'onnxruntime-cpu' only"):
        Target.model_validate({**TARGET, "runtime": "tensorrt", "tune": {"intra_op_num_threads": [1]}})


# ------------------------------------------------------------------ teacher source


def test_teacher_with_checkpoint_only_is_valid() -> None:
    t = TeacherConfig.model_validate({"factory": "a:b", "checkpoint": "w.safetensors"})
    assert t.checkpoint == "w.safetensors" and t.train is None


def test_teacher_with_train_only_is_valid() -> None:
    t = TeacherConfig.model_validate({"factory": "a:b", "train": {}})
    assert t.train is not None and t.train.epochs == 20


@pytest.mark.parametrize(
    "teacher",
    [
        {"factory": "a:b"},
        {"factory": "a:b", "checkpoint": "w.safetensors", "train": {"epochs": 1}},
    ],
    ids=["neither", "both"],
)
def test_teacher_needs_exactly_one_source(teacher: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of 'checkpoint'"):
        TeacherConfig.model_validate(teacher)
    with pytest.raises(ValidationError) as info:
        Project.model_validate(project(teacher=teacher))
    assert ("teacher",) in error_locs(info.value)


# ------------------------------------------------------------------ recipes


def test_recipe_accepts_known_keys() -> None:
    r = Recipe.model_validate({"teacher_train": {"epochs": 2}, "distill": {"epochs": 3, "alpha": 0.5},
                               "quantize": {"calibrate_method": "entropy"}})
    assert r.distill == {"epochs": 3, "alpha": 0.5}
    assert r.bench == BenchConfig()


@pytest.mark.parametrize(
    ("section", "value", "fragment"),
    [
        ("distill", {"epoch": 3}, "'epoch': "),
        ("teacher_train", {"learning_rate": 0.1}, "'learning_rate': "),
        ("quantize", {"samples": 10}, "'samples': "),
        ("distill", {"alpha": 1.5}, "'alpha': "),
        ("quantize", {"calibrate_method": "kl"}, "'calibrate_method': "),
    ],
)
def test_recipe_rejects_unknown_or_invalid_keys(section: str, value: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Recipe.model_validate({section: value})
    assert info.value.errors()[0]["loc"] == (section,)
    assert fragment in str(info.value)


def test_recipe_rejects_unknown_section() -> None:
    with pytest.raises(ValidationError):
        Recipe.model_validate({"export": {"opset": 17}})


def test_apply_recipe_overrides_only_the_named_settings() -> None:
    base = Project.model_validate(project(distill={"epochs": 40, "lr": 0.01}, quantize={"calibration_samples": 64}))
    recipe = Recipe.model_validate({"teacher_train": {"epochs": 1}, "distill": {"epochs": 2},
                                    "quantize": {"calibrate_method": "percentile"}})
    out = apply_recipe(base, recipe)
    assert out.teacher.train is not None and out.teacher.train.epochs == 1
    assert out.distill.epochs == 2 and out.distill.lr == 0.01  # untouched keys kept
    assert out.quantize.calibrate_method == "percentile" and out.quantize.calibration_samples == 64
    assert out.student == base.student and out.data == base.data
    # the input project is not changed
    assert base.distill.epochs == 40 and base.teacher.train is not None and base.teacher.train.epochs == 5


def test_apply_empty_recipe_is_identity() -> None:
    base = Project.model_validate(PROJECT)
    assert apply_recipe(base, Recipe()) == base


def test_apply_recipe_teacher_train_ignored_for_checkpoint_teacher() -> None:
    base = Project.model_validate(project(teacher={"factory": "a:b", "checkpoint": "w.safetensors"}))
    out = apply_recipe(base, Recipe.model_validate({"teacher_train": {"epochs": 1}}))
    assert out.teacher.train is None and out.teacher.checkpoint == "w.safetensors"


def test_apply_recipe_result_is_a_validated_project() -> None:
    out = apply_recipe(Project.model_validate(PROJECT), Recipe.model_validate({"distill": {"temperature": 2}}))
    assert isinstance(out, Project)
    assert out.distill.temperature == 2.0 and isinstance(out.distill.temperature, float)


# ------------------------------------------------------------------ bench and budgets


def test_bench_defaults_are_within_bounds() -> None:
    b = BenchConfig()
    assert b.min_runs <= b.max_runs


def test_bench_max_runs_below_min_runs_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"max_runs \(50\) is below min_runs \(100\)"):
        BenchConfig(min_runs=100, max_runs=50)


def test_bench_max_runs_equal_min_runs_is_allowed() -> None:
    assert BenchConfig(min_runs=10, max_runs=10).max_runs == 10


@pytest.mark.parametrize(
    "kwargs",
    [{"min_runs": 9}, {"max_runs": 9, "min_runs": 9}, {"warmup_runs": -1}, {"max_seconds": 0},
     {"stable_rel_change": 0}],
)
def test_bench_field_bounds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BenchConfig(**kwargs)


def test_bench_zero_warmup_is_allowed() -> None:
    assert BenchConfig(warmup_runs=0).warmup_runs == 0


def test_budgets_left_out_are_none_except_correctness_checks() -> None:
    b = Budgets()
    correctness = {"export_parity_max_abs_diff": 1e-4, "quantize_rule_violations": 0, "unsupported_nodes": 0}
    assert {k: getattr(b, k) for k in correctness} == correctness
    others = {k: v for k, v in b.model_dump().items() if k not in correctness}
    assert others and all(v is None for v in others.values())


@pytest.mark.parametrize("kwargs", [{"size_mb": 0}, {"latency_p90_ms": -1.0}, {"overall_accuracy_drop_pt": -0.1},
                                    {"quantize_perplexity_increase_pct": -0.1}])
def test_budgets_reject_out_of_range(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Budgets(**kwargs)


def test_budget_zero_accuracy_drop_is_allowed() -> None:
    assert Budgets(distill_accuracy_drop_pt=0).distill_accuracy_drop_pt == 0
