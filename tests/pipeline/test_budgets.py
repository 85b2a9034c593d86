"""edgekd/pipeline/budgets.py: which budget is checked after which stage, and the verdicts."""
from __future__ import annotations

import pytest

from edgekd.config.models import Budgets
from edgekd.pipeline.budgets import RULES, check, stages_checked
from edgekd.pipeline.results import Metric


def m(value: float | None, unit: str = "%") -> Metric:
    return Metric(value, unit, "measured", "test")


def by_budget(verdicts: list) -> dict:
    return {v.budget: v for v in verdicts}


def test_every_budget_has_a_rule() -> None:
    assert {r.budget for r in RULES} == set(Budgets.model_fields)


def test_stages_checked() -> None:
    assert stages_checked("size_mb") == ["search", "quantize", "compile"]
    assert stages_checked("latency_p90_ms") == ["search", "bench"]
    assert stages_checked("nonexistent") == []


def test_drop_is_computed_from_metrics() -> None:
    metrics = {"teacher.accuracy": m(97.5), "student.accuracy": m(95.0)}
    [verdict] = check("distill", metrics, Budgets(distill_accuracy_drop_pt=3.0))
    assert verdict.budget == "distill_accuracy_drop_pt" and verdict.stage == "distill"
    assert verdict.value == pytest.approx(2.5)
    assert verdict.limit == 3.0 and verdict.unit == "pt"
    assert verdict.status == "pass"


def test_drop_over_budget_fails() -> None:
    metrics = {"teacher.accuracy": m(97.5), "student.accuracy": m(90.0)}
    [verdict] = check("distill", metrics, Budgets(distill_accuracy_drop_pt=3.0))
    assert verdict.value == pytest.approx(7.5)
    assert verdict.status == "fail"


def test_value_at_limit_passes() -> None:
    [verdict] = check("bench", {"latency.p90_ms": m(1.0, "ms")}, Budgets(latency_p90_ms=1.0))
    assert verdict.status == "pass"


def test_accuracy_gain_is_a_negative_drop() -> None:
    metrics = {"teacher.accuracy": m(90.0), "engine.accuracy": m(91.0)}
    [verdict] = check("evaluate", metrics, Budgets(overall_accuracy_drop_pt=0.0))
    assert verdict.value == pytest.approx(-1.0) and verdict.status == "pass"


def test_no_budget_when_limit_left_out() -> None:
    metrics = {"teacher.accuracy": m(97.5), "student.accuracy": m(80.0)}
    [verdict] = check("distill", metrics, Budgets())
    assert verdict.limit is None and verdict.value == pytest.approx(17.5)
    assert verdict.status == "no budget"


@pytest.mark.parametrize(
    "metrics",
    [
        {},
        {"teacher.accuracy": m(97.5)},
        {"student.accuracy": m(95.0)},
        {"teacher.accuracy": m(97.5), "student.accuracy": m(None)},
    ],
    ids=["none", "no student", "no teacher", "student None"],
)
def test_not_measured_when_an_input_is_missing(metrics: dict[str, Metric]) -> None:
    [verdict] = check("distill", metrics, Budgets(distill_accuracy_drop_pt=1.0))
    assert verdict.value is None
    assert verdict.status == "not measured"


def test_export_checks_parity_and_accuracy() -> None:
    metrics = {"student.accuracy": m(95.0), "onnx_fp32.accuracy": m(94.0),
               "export.parity_max_abs_diff": m(3e-4, "")}
    verdicts = by_budget(check("export", metrics, Budgets(export_accuracy_drop_pt=0.5)))
    assert set(verdicts) == {"export_parity_max_abs_diff", "export_accuracy_drop_pt"}
    parity = verdicts["export_parity_max_abs_diff"]
    assert parity.value == pytest.approx(3e-4) and parity.limit == 1e-4 and parity.status == "fail"
    drop = verdicts["export_accuracy_drop_pt"]
    assert drop.value == pytest.approx(1.0) and drop.status == "fail"


def test_quantize_checks_drop_and_int8_size() -> None:
    metrics = {"onnx_fp32.accuracy": m(94.0), "int8.accuracy": m(93.5), "int8.size_mb": m(0.2, "MB"),
               "engine.size_mb": m(5.0, "MB"), "int8.rule_violations": m(0, "")}
    verdicts = by_budget(check("quantize", metrics, Budgets(quantize_accuracy_drop_pt=1.0, size_mb=1.0)))
    assert verdicts["quantize_accuracy_drop_pt"].value == pytest.approx(0.5)
    assert verdicts["quantize_rule_violations"].value == 0
    assert verdicts["size_mb"].value == pytest.approx(0.2)  # int8 file, not the engine
    assert all(v.status == "pass" for v in verdicts.values())


def test_quantize_rule_violations_fail_by_default() -> None:
    metrics = {"int8.rule_violations": m(3, "")}
    verdicts = by_budget(check("quantize", metrics, Budgets()))
    assert verdicts["quantize_rule_violations"].status == "fail"


def test_compile_checks_engine_size() -> None:
    metrics = {"int8.size_mb": m(0.2, "MB"), "engine.size_mb": m(5.0, "MB")}
    [verdict] = check("compile", metrics, Budgets(size_mb=1.0))
    assert verdict.value == pytest.approx(5.0) and verdict.status == "fail"
    assert verdict.metric == "engine.size_mb" and verdict.unit == "MB"


def test_stage_without_rules_has_no_verdicts() -> None:
    assert check("teacher", {"teacher.accuracy": m(99.0)}, Budgets(size_mb=1.0)) == []


def test_not_measured_wins_over_no_budget() -> None:
    [verdict] = check("bench", {}, Budgets())
    assert verdict.status == "not measured"


def test_verdict_json_carries_status() -> None:
    [verdict] = check("bench", {"latency.p90_ms": m(2.0, "ms")}, Budgets(latency_p90_ms=1.0))
    data = verdict.to_json()
    assert data["status"] == "fail" and data["value"] == 2.0 and data["limit"] == 1.0


def test_search_budgets_apply_only_when_a_search_ran() -> None:
    budgets = Budgets(latency_p90_ms=1.0, size_mb=1.0)
    assert check("search", {}, budgets) == []  # no [student.search]: nothing to check, nothing reported
    verdicts = by_budget(check("search", {"search.latency_ms": m(2.0, "ms"), "search.size_mb": m(0.5, "MB")}, budgets))
    assert verdicts["latency_p90_ms"].status == "fail" and verdicts["size_mb"].status == "pass"
