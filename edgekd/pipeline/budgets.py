"""Which budget is checked after which stage, against which measured number."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from edgekd.config.models import Budgets
from edgekd.pipeline.results import Metric, Verdict

Metrics = dict[str, Metric]


def _drop(before: str, after: str) -> Callable[[Metrics], float | None]:
    def measure(m: Metrics) -> float | None:
        if before not in m or after not in m or m[before].value is None or m[after].value is None:
            return None
        return float(m[before].value) - float(m[after].value)
    return measure


def _value(name: str) -> Callable[[Metrics], float | None]:
    def measure(m: Metrics) -> float | None:
        return None if name not in m or m[name].value is None else float(m[name].value)
    return measure


@dataclass(frozen=True)
class Rule:
    budget: str  # a field of Budgets
    stage: str
    metric: str  # what is compared, in words the report shows
    unit: str
    measure: Callable[[Metrics], float | None]
    optional: bool = False  # checked only where the stage produced the metric (e.g. a student search)


RULES: tuple[Rule, ...] = (
    Rule("latency_p90_ms", "search", "latency of the chosen student candidate", "ms", _value("search.latency_ms"), optional=True),
    Rule("size_mb", "search", "INT8 size of the chosen student candidate", "MB", _value("search.size_mb"), optional=True),
    Rule("distill_accuracy_drop_pt", "distill", "teacher.accuracy - student.accuracy", "pt", _drop("teacher.accuracy", "student.accuracy")),
    Rule("export_parity_max_abs_diff", "export", "max |onnx - torch| logits", "", _value("export.parity_max_abs_diff")),
    Rule("export_accuracy_drop_pt", "export", "student.accuracy - onnx_fp32.accuracy", "pt", _drop("student.accuracy", "onnx_fp32.accuracy")),
    Rule("quantize_accuracy_drop_pt", "quantize", "onnx_fp32.accuracy - int8.accuracy", "pt", _drop("onnx_fp32.accuracy", "int8.accuracy")),
    Rule("quantize_rule_violations", "quantize", "Q/DQ nodes breaking the target's rules", "", _value("int8.rule_violations")),
    Rule("size_mb", "quantize", "int8.size_mb", "MB", _value("int8.size_mb")),
    Rule("unsupported_nodes", "check", "nodes nothing on the target runs", "", _value("check.unsupported_nodes")),
    Rule("fallback_nodes_pct", "check", "nodes off the accelerator", "%", _value("check.fallback_nodes_pct")),
    Rule("fallback_macs_pct", "check", "MACs off the accelerator", "%", _value("check.fallback_macs_pct")),
    Rule("size_mb", "compile", "engine.size_mb", "MB", _value("engine.size_mb")),
    Rule("overall_accuracy_drop_pt", "evaluate", "teacher.accuracy - engine.accuracy", "pt", _drop("teacher.accuracy", "engine.accuracy")),
    Rule("latency_p90_ms", "bench", "latency.p90_ms", "ms", _value("latency.p90_ms")),
)

if {r.budget for r in RULES} != set(Budgets.model_fields):  # every budget is checked somewhere
    raise AssertionError("budgets.RULES and config.Budgets disagree")


def check(stage: str, metrics: Metrics, budgets: Budgets) -> list[Verdict]:
    """Every rule of `stage`, measured against all metrics so far."""
    verdicts = []
    for rule in (r for r in RULES if r.stage == stage):
        value = rule.measure(metrics)
        if value is not None or not rule.optional:
            verdicts.append(Verdict(rule.budget, stage, rule.metric, value, getattr(budgets, rule.budget), rule.unit))
    return verdicts


def stages_checked(budget: str) -> list[str]:
    return [r.stage for r in RULES if r.budget == budget]
