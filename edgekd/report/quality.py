"""The task metric a report's quality numbers are in (report["task"]["metric"]), and how the views
(report.md, report.html, its plots, the model card) name it and its direction. A report written
before tasks existed has no "task": its quality numbers are accuracy."""
from __future__ import annotations

from typing import Any

from edgekd.pipeline.budgets import degradation_unit
from edgekd.tasks.specs import ACCURACY, MetricSpec

# the models whose task metric a build measures: (metric prefix, label); report[<metric name>] holds them
QUALITY_ROWS = (("teacher", "teacher (torch)"), ("student", "student fp32 (torch)"),
                ("onnx_fp32", "student fp32 (ONNX)"), ("int8", "student INT8 (ONNX QDQ)"), ("engine", "engine"))


def task_json(task_name: str, metric: MetricSpec) -> dict[str, Any]:
    """report["task"]: the task and its quality metric, with the direction budgets and the gate follow."""
    return {"name": task_name, "metric": {"name": metric.name, "unit": metric.unit, "higher_is_better": metric.higher_is_better,
                                          "degradation_name": metric.degradation_name}}


def report_metric(report: dict[str, Any]) -> MetricSpec:
    """The metric of report["task"], or accuracy for a report without one."""
    raw = (report.get("task") or {}).get("metric")
    if not isinstance(raw, dict):
        return ACCURACY
    return MetricSpec(str(raw["name"]), str(raw["unit"]), bool(raw["higher_is_better"]))


def task_name(report: dict[str, Any]) -> str:
    return str((report.get("task") or {}).get("name") or "not recorded (a report from before tasks: accuracy)")


def quality(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The task metric of each model that was measured ({row: metric json}), from report[<metric name>]."""
    return report.get(report_metric(report).name) or {}


def value(report: dict[str, Any], row: str) -> float | None:
    metric = quality(report).get(row)
    return metric["value"] if metric else None


def title(metric: MetricSpec) -> str:
    """`Accuracy`, `Perplexity`: the heading of the quality sections."""
    return metric.name[:1].upper() + metric.name[1:]


def direction(metric: MetricSpec) -> str:
    return "higher is better" if metric.higher_is_better else "lower is better"


def axis_label(metric: MetricSpec) -> str:
    """`accuracy (%), higher is better`, `perplexity, lower is better`."""
    unit = f" ({metric.unit})" if metric.unit else ""
    return f"{metric.name}{unit}, {direction(metric)}"


def describe(report: dict[str, Any]) -> str:
    """One line: the task, its metric and direction, and the budgets that apply to it."""
    metric = report_metric(report)
    return (f"{task_name(report)}; quality metric {metric.name} ({direction(metric)}); "
            f"quality budgets *_{metric.degradation_name}")


def worst_allowed(metric: MetricSpec, before: float, limit: float) -> float:
    """The value a model may reach from `before` within a budget of `limit` on `metric.degradation`
    (accuracy 95 % with 1 pt: 94; perplexity 20 with 5 %: 21)."""
    step = limit if metric.unit == "%" else limit * abs(before) / 100.0
    return before - step if metric.higher_is_better else before + step


def budget_text(metric: MetricSpec, limit: float) -> str:
    """`- 1 pt`, `+ 5 %`: a limit on the change, signed by the metric's direction."""
    return f"{'-' if metric.higher_is_better else '+'} {limit:g} {degradation_unit(metric)}"
