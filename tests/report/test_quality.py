"""edgekd/report/quality.py and every view that reads the task's metric through it (report.md,
report.html and its plots, MODEL_CARD.md). The perplexity report is the hand-built report of
report_dicts.py turned into a perplexity task's by helpers.as_perplexity (task, stage metrics,
report["perplexity"], perplexity budgets, verdicts re-checked); the old report is the same hand-built
report, which has no "task" (as report.json files written before tasks)."""
from __future__ import annotations

import functools
import json
import re

import jsonschema
import pytest
from helpers import as_perplexity
from report_dicts import conforms, report

from edgekd.report import html, markdown, model_card, plots
from edgekd.report import quality as q
from edgekd.report.build_report import SCHEMA_FILE
from edgekd.tasks.specs import ACCURACY, METRICS, PERPLEXITY


@functools.cache
def perplexity_page() -> str:
    return html.render(as_perplexity(report()))


def figure(page: str, key: str) -> str:
    return re.search(rf'<figure id="fig-{key}">(.*?)</figure>', page, re.DOTALL).group(1)


def test_task_json_round_trips_through_the_schema() -> None:
    data = as_perplexity(report())
    assert data["task"] == {"name": "causal-lm", "metric": {"name": "perplexity", "unit": "", "higher_is_better": False,
                                                             "degradation_name": "perplexity_increase_pct"}}
    assert q.report_metric(data) == PERPLEXITY and q.quality(data) == data["perplexity"]
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator(schema["properties"]["task"]).validate(data["task"])
    for row in data["perplexity"].values():
        conforms(row, "metric")


def test_a_report_without_task_is_accuracy() -> None:
    old = report()
    assert "task" not in old
    assert q.report_metric(old) == ACCURACY and q.quality(old) == old["accuracy"]
    assert q.task_name(old).startswith("not recorded")


@pytest.mark.parametrize("metric", list(METRICS.values()), ids=list(METRICS))
@pytest.mark.parametrize("before, limit", [(95.0, 1.0), (20.0, 5.0), (3.5, 0.0)])
def test_worst_allowed_is_where_the_degradation_meets_the_budget(metric, before: float, limit: float) -> None:
    assert metric.degradation(before, q.worst_allowed(metric, before, limit)) == pytest.approx(limit)


def test_worst_allowed_follows_the_direction() -> None:
    assert q.worst_allowed(ACCURACY, 95.0, 1.0) == pytest.approx(94.0)  # a floor, in points
    assert q.worst_allowed(PERPLEXITY, 20.0, 5.0) == pytest.approx(21.0)  # a ceiling, in percent of 20


def test_names_and_direction_words() -> None:
    assert (q.title(PERPLEXITY), q.axis_label(PERPLEXITY)) == ("Perplexity", "perplexity, lower is better")
    assert (q.title(ACCURACY), q.axis_label(ACCURACY)) == ("Accuracy", "accuracy (%), higher is better")
    assert (q.budget_text(ACCURACY, 3.0), q.budget_text(PERPLEXITY, 25.0)) == ("- 3 pt", "+ 25 %")


def test_markdown_of_a_perplexity_report_names_perplexity() -> None:
    text = markdown.render(as_perplexity(report()))
    assert "- task: causal-lm; quality metric perplexity (lower is better); quality budgets *_perplexity_increase_pct" in text
    assert "## Perplexity\n\n| model | perplexity | how obtained |" in text
    assert "| engine | 24.15 | measured: exp(mean next-token NLL) over 4096 test tokens |" in text
    assert "| distill_perplexity_increase_pct (100 * (student.perplexity - teacher.perplexity) / teacher.perplexity) | 15% | <= 20% | pass |" in text
    assert "## Accuracy" not in text and "accuracy_drop_pt" not in text


def test_markdown_of_an_old_report_is_accuracy() -> None:
    text = markdown.render(report())
    assert "- task: not recorded (a report from before tasks: accuracy); quality metric accuracy (higher is better)" in text
    assert "## Accuracy\n\n| model | accuracy | how obtained |" in text


def test_html_of_a_perplexity_report_names_perplexity() -> None:
    page = perplexity_page()
    assert "<h2>Perplexity</h2>" in page and "<h2>Accuracy</h2>" not in page
    assert "<th>perplexity</th>" in page
    assert "<tr><th>task</th><td>causal-lm; quality metric perplexity (lower is better)" in page


def test_pareto_of_a_perplexity_report_draws_a_ceiling() -> None:
    plot = plots.pareto(as_perplexity(report()))
    assert plot.title == "Perplexity vs latency (Pareto view)" and plot.png
    assert "teacher (torch): p90 0.41 ms (measured: PyTorch 2.13.0+cpu eager fp32, batch 1), perplexity 20" in plot.notes
    assert plots.quality_bound(as_perplexity(report()), PERPLEXITY) == (pytest.approx(25.0), "perplexity ceiling 25 (teacher + 25 %)")
    assert plots.quality_bound(report(), ACCURACY) == (pytest.approx(95.89), "accuracy floor 95.89% (teacher - 3 pt)")
    assert "Perplexity vs latency (Pareto view)" in figure(perplexity_page(), "pareto")


def test_pareto_front_follows_the_direction() -> None:
    points = [(0.4, 20.0), (0.03, 24.0), (0.5, 26.0), (0.05, 24.0)]  # (latency, perplexity)
    assert plots._pareto_front(points, higher_is_better=False) == [(0.03, 24.0), (0.4, 20.0)]


def test_pareto_without_the_overall_budget_says_which_one() -> None:
    data = as_perplexity(report(), budgets={"overall_perplexity_increase_pct": None})
    assert "no perplexity ceiling: needs the teacher perplexity and an overall_perplexity_increase_pct budget" in plots.pareto(data).notes


def test_waterfall_of_a_perplexity_report() -> None:
    data = as_perplexity(report(latency=None, not_run_from="evaluate"), {"int8": 30.0})
    assert data["verdict"] == "fail" and [v["budget"] for v in data["failed_budgets"]] == ["quantize_perplexity_increase_pct"]
    plot = plots.waterfall(data)
    assert plot.title == "Stage waterfall: perplexity and size after each stage" and plot.png
    assert "perplexity of engine: none (evaluate stage not run)" in plot.notes
    nothing = plots.waterfall(as_perplexity(report(latency=None, not_run_from="teacher")))
    assert nothing.missing.startswith("no perplexity measured: teacher not run; distill not run")


def test_model_card_of_a_perplexity_report() -> None:
    card = model_card.render(as_perplexity(report()))
    assert "| task | causal-lm; quality metric perplexity (lower is better); quality budgets *_perplexity_increase_pct |" in card
    evaluation = card[card.index("## Evaluation on "):]
    assert "Perplexity: lower is better.\n\n| model | perplexity | how obtained |" in evaluation
    assert "| teacher (torch) | 20 | measured: exp(mean next-token NLL)" in evaluation
    assert "| evaluate | overall_perplexity_increase_pct (" in evaluation and "accuracy" not in evaluation


def test_model_card_of_an_old_report_is_accuracy() -> None:
    card = model_card.render(report())
    assert "| model | accuracy | how obtained |" in card and "Accuracy: higher is better." in card
