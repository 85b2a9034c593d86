"""Which budget is checked after which stage, against which measured number.

Quality budgets follow the task's metric and its direction (edgekd.tasks.specs.MetricSpec): each step
of the pipeline that can lose quality has one budget per known metric, named
`<step>_<metric.degradation_name>` (`distill_accuracy_drop_pt`, `distill_perplexity_increase_pct`)
and computed with `metric.degradation(before, after)`. A build checks the budgets of its task's
metric; a budget for another metric does not apply to it (`not_applicable` says so where the profile
set one and left this metric's twin unset)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgekd.config.models import Budgets
from edgekd.pipeline.results import Metric, Verdict
from edgekd.tasks.specs import ACCURACY, METRICS, MetricSpec

Metrics = dict[str, Metric]


@dataclass(frozen=True)
class QualityStep:
    """A step that can lose quality: the metric of model `after` against that of model `before`
    (model names as stage metrics are prefixed: teacher, student, onnx_fp32, int8, engine)."""

    name: str  # the budgets' prefix: distill, export, quantize, overall
    stage: str  # checked after this stage
    before: str
    after: str

    def budget(self, metric: MetricSpec) -> str:
        """The Budgets field for this step and metric: distill_accuracy_drop_pt, ..."""
        return f"{self.name}_{metric.degradation_name}"


QUALITY_STEPS = (QualityStep("distill", "distill", "teacher", "student"),
                 QualityStep("export", "export", "student", "onnx_fp32"),
                 QualityStep("quantize", "quantize", "onnx_fp32", "int8"),
                 QualityStep("overall", "evaluate", "teacher", "engine"))


def degradation_unit(metric: MetricSpec) -> str:
    """The unit a change of `metric` is budgeted in: points for a percentage, else percent."""
    return "pt" if metric.unit == "%" else "%"


def _degradation(metric: MetricSpec, before: str, after: str) -> Callable[[Metrics], float | None]:
    def measure(m: Metrics) -> float | None:
        a, b = m.get(before), m.get(after)
        if a is None or b is None or a.value is None or b.value is None:
            return None
        try:
            return metric.degradation(float(a.value), float(b.value))
        except ValueError:  # a relative change from 0 (no real perplexity is 0): not measurable
            return None
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
    task_metric: str | None = None  # checked only for tasks measured by this metric (None: every task)
    floor: bool = False  # the value must stay at or above the limit (higher is better: decode tokens/s)
    shown_when_set: bool = False  # optional, but "not measured" where the profile sets it and the stage gave no value


def _change_text(metric: MetricSpec, before: str, after: str) -> str:
    """The change in words: `teacher.accuracy - student.accuracy`,
    `100 * (student.perplexity - teacher.perplexity) / teacher.perplexity`."""
    a, b = f"{before}.{metric.name}", f"{after}.{metric.name}"
    worse = f"{a} - {b}" if metric.higher_is_better else f"{b} - {a}"
    return worse if metric.unit == "%" else f"100 * ({worse}) / {a}"


def quality_rules(step: QualityStep) -> tuple[Rule, ...]:
    """The step's budget for every known metric, each checked only for tasks measured by it."""
    return tuple(Rule(step.budget(m), step.stage, _change_text(m, step.before, step.after), degradation_unit(m),
                      _degradation(m, f"{step.before}.{m.name}", f"{step.after}.{m.name}"), task_metric=m.name)
                 for m in METRICS.values())


DISTILL, EXPORT, QUANTIZE, OVERALL = (quality_rules(s) for s in QUALITY_STEPS)
# the bench stage's decoder scenarios and the worker's peak memory: metrics named in edgekd.pipeline.lm_metrics;
# checked where the bench produced a value, "not measured" (the metric's how says why) where a set budget has none
TTFT_MS, DECODE_TOKENS_PER_S, PEAK_MEMORY_MB = "latency.ttft_p90_ms", "latency.decode_tokens_per_s", "latency.peak_rss_mb"
DECODER_RULES = (
    Rule("ttft_ms", "bench", TTFT_MS, "ms", _value(TTFT_MS), optional=True, shown_when_set=True),
    Rule("decode_tokens_per_s", "bench", DECODE_TOKENS_PER_S, "tokens/s", _value(DECODE_TOKENS_PER_S), optional=True,
         floor=True, shown_when_set=True),
    Rule("peak_memory_mb", "bench", PEAK_MEMORY_MB, "MiB", _value(PEAK_MEMORY_MB), optional=True, shown_when_set=True),
)
RULES: tuple[Rule, ...] = (
    Rule("latency_p90_ms", "search", "latency of the chosen student candidate", "ms", _value("search.latency_ms"), optional=True),
    Rule("size_mb", "search", "INT8 size of the chosen student candidate", "MB", _value("search.size_mb"), optional=True),
    Rule("decode_tokens_per_s", "search", "decode tokens/s of the chosen decoder candidate (INT4, untrained)", "tokens/s",
         _value("search.decode_tokens_per_s"), optional=True, floor=True),
    Rule("ttft_ms", "search", "time to first token of the chosen decoder candidate", "ms", _value("search.ttft_p90_ms"), optional=True),
    Rule("peak_memory_mb", "search", "bench worker peak memory with the chosen decoder candidate", "MiB", _value("search.peak_rss_mb"),
         optional=True),
    *DISTILL,
    Rule("export_parity_max_abs_diff", "export", "max |onnx - torch| logits", "", _value("export.parity_max_abs_diff")),
    *EXPORT,
    *QUANTIZE,
    Rule("quantize_rule_violations", "quantize", "Q/DQ nodes breaking the target's rules", "", _value("int8.rule_violations")),
    Rule("size_mb", "quantize", "int8.size_mb", "MB", _value("int8.size_mb")),
    Rule("unsupported_nodes", "check", "nodes nothing on the target runs", "", _value("check.unsupported_nodes")),
    Rule("fallback_nodes_pct", "check", "nodes off the accelerator", "%", _value("check.fallback_nodes_pct")),
    Rule("fallback_macs_pct", "check", "MACs off the accelerator", "%", _value("check.fallback_macs_pct")),
    Rule("size_mb", "compile", "engine.size_mb", "MB", _value("engine.size_mb")),
    *OVERALL,
    Rule("latency_p90_ms", "bench", "latency.p90_ms", "ms", _value("latency.p90_ms")),
    *DECODER_RULES,
)

if {r.budget for r in RULES} != set(Budgets.model_fields):  # every budget is checked somewhere
    raise AssertionError("budgets.RULES and config.Budgets disagree")


def applies(rule: Rule, metric: MetricSpec) -> bool:
    """Whether `rule` is checked for a task measured by `metric`."""
    return rule.task_metric is None or rule.task_metric == metric.name


def rules(stage: str, metric: MetricSpec = ACCURACY) -> list[Rule]:
    """The rules checked after `stage` for a task measured by `metric`, in order."""
    return [r for r in RULES if r.stage == stage and applies(r, metric)]


def check(stage: str, metrics: Metrics, budgets: Budgets, metric: MetricSpec = ACCURACY) -> list[Verdict]:
    """Every rule of `stage` for a task measured by `metric`, measured against all metrics so far."""
    verdicts = []
    for rule in rules(stage, metric):
        value, limit = rule.measure(metrics), getattr(budgets, rule.budget)
        if value is not None or not rule.optional or (rule.shown_when_set and limit is not None):
            verdicts.append(Verdict(rule.budget, stage, rule.metric, value, limit, rule.unit, rule.floor))
    return verdicts


@dataclass(frozen=True)
class NotApplicable:
    """A budget the profile set for a metric other than the build's: not checked."""

    budget: str
    stage: str
    limit: float
    unit: str
    measures: str  # the metric it is for
    metric: str  # the build's metric
    instead: str  # the budget of the build's metric at the same step, unset in the profile

    def describe(self) -> str:
        return (f"budget {self.budget} = {self.limit:g} {self.unit} not checked: it is for tasks measured by "
                f"{self.measures}, and this build's task is measured by {self.metric} (set {self.instead} instead)")


def not_applicable(stage: str, budgets: Budgets, metric: MetricSpec = ACCURACY) -> list[NotApplicable]:
    """The budgets of `stage` the profile sets for another metric while leaving the build's own
    metric's budget at that step unset: the profile's limit there is not checked, and the report
    says so. (A profile that sets both, for builds of either kind, gets no such note.)"""
    out = []
    for step in (s for s in QUALITY_STEPS if s.stage == stage):
        instead = step.budget(metric)
        if getattr(budgets, instead) is not None:
            continue
        for other in (m for m in METRICS.values() if m.name != metric.name):
            limit = getattr(budgets, step.budget(other))
            if limit is not None:
                out.append(NotApplicable(step.budget(other), stage, limit, degradation_unit(other), other.name,
                                         metric.name, instead))
    return out


def stages_checked(budget: str) -> list[str]:
    return [r.stage for r in RULES if r.budget == budget]
