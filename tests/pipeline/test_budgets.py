"""edgekd/pipeline/budgets.py: which budget is checked after which stage, and the verdicts; quality budgets
follow the task's metric (accuracy drops in points, perplexity increases in percent of the value before)."""
from __future__ import annotations

import pytest

from edgekd.config.models import Budgets
from edgekd.pipeline.budgets import (
    QUALITY_STEPS,
    RULES,
    check,
    not_applicable,
    rules,
    stages_checked,
)
from edgekd.pipeline.results import Metric
from edgekd.tasks.specs import ACCURACY, METRICS, PERPLEXITY


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


# --- budgets follow the task's metric and its direction -------------------------------------------

ACCURACY_BUDGETS = ("distill_accuracy_drop_pt", "export_accuracy_drop_pt", "quantize_accuracy_drop_pt", "overall_accuracy_drop_pt")
PERPLEXITY_BUDGETS = ("distill_perplexity_increase_pct", "export_perplexity_increase_pct",
                      "quantize_perplexity_increase_pct", "overall_perplexity_increase_pct")


def test_every_quality_step_has_one_budget_per_metric_named_by_it() -> None:
    for step in QUALITY_STEPS:
        for metric in METRICS.values():
            [rule] = [r for r in RULES if r.budget == step.budget(metric)]
            assert rule.stage == step.stage and rule.task_metric == metric.name
    assert [s.budget(ACCURACY) for s in QUALITY_STEPS] == list(ACCURACY_BUDGETS)
    assert [s.budget(PERPLEXITY) for s in QUALITY_STEPS] == list(PERPLEXITY_BUDGETS)
    assert set(ACCURACY_BUDGETS + PERPLEXITY_BUDGETS) <= set(Budgets.model_fields)


def test_old_budget_names_are_checked_where_they_always_were() -> None:
    assert [stages_checked(b) for b in ACCURACY_BUDGETS] == [["distill"], ["export"], ["quantize"], ["evaluate"]]
    assert [stages_checked(b) for b in PERPLEXITY_BUDGETS] == [["distill"], ["export"], ["quantize"], ["evaluate"]]
    [verdict] = check("evaluate", {"teacher.accuracy": m(90.0), "engine.accuracy": m(88.5)}, Budgets(overall_accuracy_drop_pt=1.0))
    assert (verdict.budget, verdict.metric, verdict.unit, verdict.status) == (
        "overall_accuracy_drop_pt", "teacher.accuracy - engine.accuracy", "pt", "fail")


def test_perplexity_increase_is_percent_of_the_value_before() -> None:
    metrics = {"teacher.perplexity": m(20.0, ""), "student.perplexity": m(25.0, "")}
    [verdict] = check("distill", metrics, Budgets(distill_perplexity_increase_pct=30.0), PERPLEXITY)
    assert verdict.budget == "distill_perplexity_increase_pct" and verdict.unit == "%"
    assert verdict.value == pytest.approx(25.0)  # (25 - 20) / 20, not 5 points
    assert verdict.metric == "100 * (student.perplexity - teacher.perplexity) / teacher.perplexity"
    assert verdict.status == "pass"
    [tight] = check("distill", metrics, Budgets(distill_perplexity_increase_pct=24.9), PERPLEXITY)
    assert tight.status == "fail"


def test_lower_perplexity_is_a_negative_increase() -> None:
    metrics = {"onnx_fp32.perplexity": m(12.0, ""), "int8.perplexity": m(11.4, "")}
    verdicts = by_budget(check("quantize", metrics, Budgets(quantize_perplexity_increase_pct=0.0), PERPLEXITY))
    assert verdicts["quantize_perplexity_increase_pct"].value == pytest.approx(-5.0)
    assert verdicts["quantize_perplexity_increase_pct"].status == "pass"


def test_a_perplexity_build_checks_perplexity_budgets_only() -> None:
    metrics = {"teacher.accuracy": m(90.0), "student.accuracy": m(10.0),  # would break the accuracy budget
               "teacher.perplexity": m(10.0, ""), "student.perplexity": m(11.0, "")}
    budgets = Budgets(distill_accuracy_drop_pt=1.0, distill_perplexity_increase_pct=15.0)
    assert [(v.budget, v.status) for v in check("distill", metrics, budgets, PERPLEXITY)] == [("distill_perplexity_increase_pct", "pass")]
    assert [(v.budget, v.status) for v in check("distill", metrics, budgets)] == [("distill_accuracy_drop_pt", "fail")]  # default: accuracy


def test_export_of_a_perplexity_build_checks_parity_and_perplexity() -> None:
    metrics = {"student.perplexity": m(10.0, ""), "onnx_fp32.perplexity": m(10.1, ""), "export.parity_max_abs_diff": m(1e-5, "")}
    verdicts = check("export", metrics, Budgets(export_perplexity_increase_pct=0.5), PERPLEXITY)
    assert [v.budget for v in verdicts] == ["export_parity_max_abs_diff", "export_perplexity_increase_pct"]
    assert verdicts[1].value == pytest.approx(1.0) and verdicts[1].status == "fail"


def test_perplexity_budget_unset_is_no_budget_not_a_pass() -> None:
    [verdict] = check("evaluate", {"teacher.perplexity": m(10.0, ""), "engine.perplexity": m(30.0, "")}, Budgets(), PERPLEXITY)
    assert verdict.budget == "overall_perplexity_increase_pct" and verdict.value == pytest.approx(200.0)
    assert verdict.status == "no budget"


def test_perplexity_from_zero_is_not_measured() -> None:
    metrics = {"teacher.perplexity": m(0.0, ""), "student.perplexity": m(5.0, "")}
    [verdict] = check("distill", metrics, Budgets(distill_perplexity_increase_pct=1.0), PERPLEXITY)
    assert verdict.value is None and verdict.status == "not measured"


def test_rules_of_a_stage_follow_the_metric() -> None:
    assert [r.budget for r in rules("quantize")] == ["quantize_accuracy_drop_pt", "quantize_rule_violations", "size_mb"]
    assert [r.budget for r in rules("quantize", PERPLEXITY)] == ["quantize_perplexity_increase_pct", "quantize_rule_violations", "size_mb"]
    assert [r.budget for r in rules("bench", PERPLEXITY)] == ["latency_p90_ms", "ttft_ms", "decode_tokens_per_s", "peak_memory_mb"]


def test_a_budget_for_the_other_metric_is_reported_not_applicable() -> None:
    """An accuracy-only profile on a perplexity build: each accuracy limit it sets is named as not checked."""
    budgets = Budgets(distill_accuracy_drop_pt=3.0, overall_accuracy_drop_pt=5.0)
    [note] = not_applicable("distill", budgets, PERPLEXITY)
    assert (note.budget, note.limit, note.unit, note.instead) == ("distill_accuracy_drop_pt", 3.0, "pt", "distill_perplexity_increase_pct")
    assert note.describe() == ("budget distill_accuracy_drop_pt = 3 pt not checked: it is for tasks measured by accuracy, "
                               "and this build's task is measured by perplexity (set distill_perplexity_increase_pct instead)")
    assert [n.budget for n in not_applicable("evaluate", budgets, PERPLEXITY)] == ["overall_accuracy_drop_pt"]
    assert not_applicable("export", budgets, PERPLEXITY) == []  # the profile sets nothing there
    assert not_applicable("distill", budgets, ACCURACY) == []  # it is the build's own metric
    [other_way] = not_applicable("quantize", Budgets(quantize_perplexity_increase_pct=2.0), ACCURACY)
    assert other_way.unit == "%" and other_way.instead == "quantize_accuracy_drop_pt"


def test_a_profile_with_both_twins_gets_no_note() -> None:
    both = Budgets(distill_accuracy_drop_pt=3.0, distill_perplexity_increase_pct=10.0)
    assert not_applicable("distill", both, PERPLEXITY) == [] and not_applicable("distill", both, ACCURACY) == []


@pytest.mark.parametrize("name", ["default", "ci"])
def test_shipped_profiles_keep_their_budgets(name: str) -> None:
    from edgekd.config import ConfigSearch
    from edgekd.config.loading import load_profile

    budgets = load_profile(name, ConfigSearch()).config.budgets
    assert all(getattr(budgets, b) is not None for b in ACCURACY_BUDGETS)
    verdicts = check("distill", {"teacher.accuracy": m(97.0), "student.accuracy": m(96.0)}, budgets)
    assert [(v.budget, v.limit) for v in verdicts] == [("distill_accuracy_drop_pt", budgets.distill_accuracy_drop_pt)]
