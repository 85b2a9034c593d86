"""The gate's checks: the profile's absolute budgets on the candidate (edgekd.pipeline.budgets, as a build
checks them) and three regressions against the baseline (latency p90, the engine's task metric, size).
The task metric (report["task"]; accuracy in reports written before tasks) is judged in its direction:
an accuracy drop or a perplexity increase is a regression."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from edgekd.config.models import Budgets, GateConfig
from edgekd.gate.reports import Report
from edgekd.gate.stats import QUANTILE, check_samples, p90_ratio
from edgekd.pipeline.budgets import RULES, check, degradation_unit, not_applicable
from edgekd.tasks.specs import MetricSpec

Status = Literal["pass", "fail", "inconclusive", "not measured", "no budget", "not comparable", "not applicable"]
SKIPPED: tuple[str, ...] = ("not measured", "no budget", "not comparable", "not applicable")  # neither a pass nor a violation
SIZE_METRICS = ("engine.size_mb", "int8.size_mb")  # the first one both reports have is compared
SAMPLES_HINT = "rebuild it with `edgekd build` (its bench stage keeps the raw samples; [recipe.bench] min_runs sets how many)"


@dataclass(frozen=True)
class Check:
    """One line of the gate's verdict. `change` is candidate vs baseline in `change_unit` ('%'
    relative, 'pt' absolute points); `interval` is the confidence interval of that change."""

    name: str
    kind: Literal["regression", "budget"]
    status: Status
    unit: str
    baseline: float | None = None
    candidate: float | None = None
    change: float | None = None
    change_unit: str = ""
    interval: tuple[float, float] | None = None
    threshold: float | None = None
    threshold_text: str = ""
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    @property
    def skipped(self) -> bool:
        return self.status in SKIPPED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval else None
        return data


def pct_change(new: float, old: float) -> float:
    return (new / old - 1.0) * 100.0


def not_checked(name: str, unit: str, threshold: float | None, text: str, why: str, status: Status = "not measured") -> Check:
    return Check(name, "regression", status, unit, threshold=threshold, threshold_text=text, detail=why)


def _point_estimate(report: Report, lat: dict[str, Any]) -> float:
    value = lat.get("p90_ms", lat.get("latency_ms"))
    if not isinstance(value, (int, float)) or value <= 0:
        raise report.bad("its estimated latency has no positive p90_ms/latency_ms")
    return float(value)


def _samples(report: Report, lat: dict[str, Any]) -> np.ndarray:
    try:
        return check_samples(lat.get("samples_ms"))
    except ValueError as exc:
        raise report.bad(f"latency measured ({lat.get('where', 'where not recorded')}) but {exc}", SAMPLES_HINT) from None


def latency(base: Report, cand: Report, cfg: GateConfig) -> Check:
    """p90 latency: measured on both sides, decided on the bootstrap interval of the p90 ratio;
    estimated on both, the point estimates; anything else is not measured / not comparable."""
    name, pct = "latency p90", cfg.max_latency_p90_increase_pct
    limit, text = 1.0 + pct / 100.0, f"<= +{pct:g} %"
    lats = {r.role: r.latency for r in (base, cand)}
    if None in lats.values():
        missing = " and ".join(role for role, lat in lats.items() if lat is None)
        return not_checked(name, "ms", pct, text, f"no latency in the {missing} report: its bench stage did not run")
    b_lat, c_lat = lats["baseline"], lats["candidate"]
    assert b_lat is not None and c_lat is not None
    methods = (b_lat.get("method"), c_lat.get("method"))
    if "estimated" in methods:
        if methods != ("estimated", "estimated"):
            return not_checked(name, "ms", pct, text, f"baseline {methods[0]}, candidate {methods[1]}: a measurement and a "
                            "model estimate are not compared", status="not comparable")
        b, c = _point_estimate(base, b_lat), _point_estimate(cand, c_lat)
        return Check(name, "regression", "fail" if c / b > limit else "pass", "ms", b, c, pct_change(c, b), "%", None, pct, text,
                     "ESTIMATED on both sides by the latency model, not measured: the point estimates are compared, "
                     "without a confidence interval (a change means the graph or the target's [device] figures changed)")
    b_s, c_s = _samples(base, b_lat), _samples(cand, c_lat)
    ci = p90_ratio(b_s, c_s, cfg.confidence, cfg.bootstrap_resamples, cfg.seed)
    detail = (f"p90 ratio {ci.ratio:.3f}, {ci.confidence:.0%} interval [{ci.low:.3f}, {ci.high:.3f}] by {ci.describe()}; "
              f"baseline measured on {b_lat.get('where', '?')}, candidate on {c_lat.get('where', '?')}")
    return Check(name, "regression", ci.decide(limit), "ms", float(np.percentile(b_s, QUANTILE)),
                 float(np.percentile(c_s, QUANTILE)), pct_change(ci.ratio, 1.0), "%",
                 (pct_change(ci.low, 1.0), pct_change(ci.high, 1.0)), pct, text, detail)


def quality_limit(cfg: GateConfig, metric: MetricSpec) -> float | None:
    """[gate] max_<metric.degradation_name> (max_accuracy_drop_pt, ...); None where GateConfig has none."""
    limit = getattr(cfg, f"max_{metric.degradation_name}", None)
    return None if limit is None else float(limit)


def quality(base: Report, cand: Report, cfg: GateConfig) -> Check:
    """The engine's task metric, in its direction: worse by more than [gate] max_<degradation_name>
    (max_accuracy_drop_pt points, max_perplexity_increase_pct percent of the baseline's) fails."""
    metric = cand.metric
    name, unit, change_unit = f"engine {metric.name}", metric.unit, degradation_unit(metric)
    limit = quality_limit(cfg, metric)
    sign = (">= -", "<= +")[not metric.higher_is_better]
    text = "" if limit is None else f"{sign}{limit:g} {change_unit}"
    if base.metric != metric:
        return not_checked(name, unit, limit, text, f"the baseline's task is measured by {base.metric.name}, the candidate's by "
                        f"{metric.name}", status="not comparable")
    b, c = base.quality(), cand.quality()
    if b is None or c is None:
        missing = " and ".join(r.role for r, a in ((base, b), (cand, c)) if a is None)
        return not_checked(name, unit, limit, text, f"no engine {metric.name} in the {missing} report: its evaluate stage did not "
                        "run, or it had no labelled data (edgekd compile without --data)")
    bv, cv = float(b["value"]), float(c["value"])
    try:
        worse = metric.degradation(bv, cv)
    except ValueError as exc:  # a relative change from 0
        return not_checked(name, unit, limit, text, str(exc))
    change = cv - bv if metric.unit == "%" else pct_change(cv, bv)  # signed as the value moved, in change_unit
    detail = c.get("how", "")
    if b.get("how") != c.get("how"):
        detail = f"measured differently: baseline {b.get('how')!r}; candidate {c.get('how')!r}"
    if limit is None:
        return Check(name, "regression", "no budget", unit, bv, cv, change, change_unit, None, None, "no threshold",
                     f"this edgekd's [gate] has no max_{metric.degradation_name}; {detail}")
    return Check(name, "regression", "fail" if worse > limit else "pass", unit, bv, cv, change, change_unit, None, limit, text, detail)


def size(base: Report, cand: Report, cfg: GateConfig) -> Check:
    """Deployed file size (engine, else the INT8 model): up by more than max_size_increase_pct fails."""
    pct = cfg.max_size_increase_pct
    text = f"<= +{pct:g} %"
    b_metrics, c_metrics = base.metrics(), cand.metrics()
    for metric in SIZE_METRICS:
        b, c = b_metrics.get(metric), c_metrics.get(metric)
        if b is not None and c is not None and b.value and c.value is not None:
            change = pct_change(float(c.value), float(b.value))
            return Check(f"size ({metric})", "regression", "fail" if change > pct else "pass", "MB", float(b.value),
                         float(c.value), change, "%", None, pct, text, c.how)
    return not_checked("size", "MB", pct, text, f"neither {' nor '.join(SIZE_METRICS)} is in both reports")


def _not_applicable(stage: str, limits: Budgets, metric: MetricSpec) -> list[Check]:
    return [Check(f"budget {n.budget} ({stage})", "budget", "not applicable", n.unit, threshold=n.limit,
                  threshold_text=f"<= {n.limit:g} {n.unit}", detail=n.describe()) for n in not_applicable(stage, limits, metric)]


def budgets(base: Report, cand: Report, limits: Budgets) -> list[Check]:
    """The profile's budgets on the candidate, rule by rule as the build checks them
    (edgekd.pipeline.budgets.check, for the candidate's task metric); the baseline's value of each is
    shown beside it, not judged. A quality budget set for another metric while the candidate's own
    is unset is listed as not applicable."""
    b_metrics, c_metrics, metric = base.metrics(), cand.metrics(), cand.metric
    out = []
    for stage in dict.fromkeys(rule.stage for rule in RULES):
        before = {v.budget: v.value for v in check(stage, b_metrics, limits, metric)}
        for verdict in check(stage, c_metrics, limits, metric):
            estimated = [n for n, m in c_metrics.items() if n in verdict.metric and m.method == "estimated"]
            detail = verdict.metric + (f" (ESTIMATED, not measured: {', '.join(estimated)})" if estimated else "")
            text = "no budget" if verdict.limit is None else f"{verdict.relation} {verdict.limit:g} {verdict.unit}".rstrip()
            out.append(Check(f"budget {verdict.budget} ({stage})", "budget", verdict.status, verdict.unit,
                             before.get(verdict.budget), verdict.value, threshold=verdict.limit, threshold_text=text,
                             detail=detail))
        out += _not_applicable(stage, limits, metric)
    return out
