"""The build figures of report.html: the task metric vs latency (Pareto view) and the stage waterfall,
drawn with matplotlib's Agg canvas (no display, no pyplot state). The latency figures are in
plots_latency.py. The quality axis is the report's task metric (report["task"]; accuracy for a report
without one), with its direction: a budget on accuracy is a floor, one on perplexity a ceiling.

Each figure is a `Plot`: a PNG, or none with `missing` saying what the report lacks, and notes
saying where every plotted number comes from."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from edgekd.pipeline.budgets import QUALITY_STEPS, QualityStep
from edgekd.report import quality as q
from edgekd.report.format import fmt
from edgekd.tasks.specs import MetricSpec

PASS, FAIL, GREY, BLUE = "#2e7d32", "#c62828", "#757575", "#1565c0"
STATUS_COLOR = {"pass": PASS, "fail": FAIL}
# (latency.compare key, quality row, label): the models of the Pareto view
PARETO_POINTS = (("teacher", "teacher", "teacher (torch)"), ("student_fp32", "student", "student fp32 (torch)"),
                 ("engine", "engine", "engine"))
# (quality row, stage that measures it, the step whose budget limits it): the waterfall's points
QUALITY_POINTS: tuple[tuple[str, str, QualityStep | None], ...] = (
    ("teacher", "teacher", None), *((s.after, s.stage, s) for s in QUALITY_STEPS))
OVERALL = next(s for s in QUALITY_STEPS if s.name == "overall")
SIZE_STEPS = (("onnx_fp32", "export"), ("int8", "quantize"), ("engine", "compile"))


@dataclass
class Plot:
    key: str  # id of the figure in the page
    title: str
    png: bytes | None = None  # None: nothing to draw, `missing` says why
    missing: str | None = None
    notes: list[str] = field(default_factory=list)  # where each plotted number comes from, what is left out


def figure(width: float = 7.0, height: float = 4.2, ncols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def log_scale(axis: Any) -> None:
    """A log axis labelled with plain numbers (0.05, not 5x10^-2), minor ticks at 2x and 5x labelled too."""
    if axis.axis_name == "x":
        axis.axes.set_xscale("log")
    else:
        axis.axes.set_yscale("log")
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def budgets(report: dict[str, Any]) -> dict[str, Any]:
    return report.get("profile", {}).get("budgets", {}) or {}


def stage(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((s for s in report.get("stages", []) if s["name"] == name), None)


def verdict(report: dict[str, Any], budget: str | None, metric: str | None = None) -> dict[str, Any] | None:
    """The first verdict on `budget` (and on `metric` when given) in any stage."""
    return next((v for s in report.get("stages", []) for v in s.get("verdicts", [])
                 if v["budget"] == budget and (metric is None or v["metric"] == metric)), None)


def latency_points(report: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """p90 latency per Pareto point ({"p90_ms", "method", "how"}) and a note on what is not measured."""
    lat = report.get("latency")
    if lat is None:
        return {}, "no latency: the bench stage did not run"
    if "compare" in lat:
        return {k: v for k, v in lat["compare"].items() if v}, None
    if lat.get("method") == "estimated":
        engine = {"p90_ms": lat.get("latency_ms"), "method": "estimated", "how": lat.get("where", "roofline model")}
    else:
        engine = {"p90_ms": lat.get("p90_ms"), "method": lat.get("method", "measured"),
                  "how": f"p90 of latency.samples_ms, {lat.get('where', 'this host')}"}
    return {"engine": engine}, "teacher and student fp32 latency not measured (this report has no latency.compare)"


def _pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and quality (in the metric's
    direction), by latency."""
    sign = 1.0 if higher_is_better else -1.0
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if not front or sign * y > sign * front[-1][1]:
            front.append((x, y))
    return front


def _an(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _pareto_points(report: dict[str, Any], metric: MetricSpec, plot: Plot) -> tuple[list[tuple[str, float, float, str]], list[str]]:
    """(label, p90 ms, metric value, method) of each model with both numbers; what is left out, and why."""
    lat_points, not_measured = latency_points(report)
    if not_measured:
        plot.notes.append(not_measured)
    drawn: list[tuple[str, float, float, str]] = []
    left_out: list[str] = []
    for lat_key, row, label in PARETO_POINTS:
        point, value = lat_points.get(lat_key), q.value(report, row)
        ms = point.get("p90_ms") if point else None
        if point is None or ms is None or value is None:  # no point: no latency either
            why = " and no ".join(w for w, gone in (("latency", ms is None), (metric.name, value is None)) if gone)
            left_out.append(f"{label}: no {why}")
            plot.notes.append(f"{label}: not plotted, no {why}" + (f" ({point['how']})" if point and point.get("how") else ""))
            continue
        drawn.append((label, ms, value, point.get("method", "measured")))
        plot.notes.append(f"{label}: p90 {fmt(ms, 'ms')} ({point.get('method', 'measured')}: {point.get('how', '')}), "
                          f"{metric.name} {fmt(value, metric.unit)}")
    return drawn, left_out


def quality_bound(report: dict[str, Any], metric: MetricSpec) -> tuple[float | None, str]:
    """The worst value the overall budget allows the engine (teacher's value and the budget), and its
    label: an accuracy floor, a perplexity ceiling; (None, why not) without both."""
    budget = OVERALL.budget(metric)
    limit, teacher = budgets(report).get(budget), q.value(report, OVERALL.before)
    word = "floor" if metric.higher_is_better else "ceiling"
    if limit is None or teacher is None:
        return None, f"no {metric.name} {word}: needs the teacher {metric.name} and {_an(budget)} budget"
    bound = q.worst_allowed(metric, teacher, limit)
    return bound, f"{metric.name} {word} {fmt(bound, metric.unit)} (teacher {q.budget_text(metric, limit)})"


def _pareto_limits(ax: Any, metric: MetricSpec, values: list[float], bound: float | None, lat_budget: float | None) -> None:
    """The quality axis' range and, with both budgets, the shaded corner within them."""
    values = values + ([bound] if bound is not None else [])
    spread = max(values) - min(values)
    pad = max(0.5, 0.15 * spread) if metric.unit == "%" else max(0.05 * max(abs(v) for v in values), 0.15 * spread, 1e-3)
    top = min(max(values) + pad, 100.5) if metric.unit == "%" else max(values) + pad
    ax.set_ylim(min(values) - pad, top)
    if lat_budget is not None and bound is not None:
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        low, high = (bound, y1) if metric.higher_is_better else (y0, bound)
        ax.fill_between([x0, lat_budget], low, high, color=PASS, alpha=0.08, zorder=0)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)


def pareto(report: dict[str, Any]) -> Plot:
    """The task metric vs p90 latency for teacher / student fp32 / engine, with the latency budget
    and the worst value the overall budget allows (teacher's value and overall_<degradation>)."""
    metric = q.report_metric(report)
    plot = Plot("pareto", f"{q.title(metric)} vs latency (Pareto view)")
    drawn, left_out = _pareto_points(report, metric, plot)
    if not drawn:
        not_measured = latency_points(report)[1]
        plot.missing = (f"nothing to plot: no model has both {_an(metric.name)} and a latency"
                        + (f" ({not_measured})" if not_measured else ""))
        return plot
    lat_budget = budgets(report).get("latency_p90_ms")
    bound, bound_label = quality_bound(report, metric)
    fig, ax = figure()
    for i, (label, ms, value, method) in enumerate(drawn):
        measured = method == "measured"
        ax.plot([ms], [value], "o" if measured else "D", markersize=9, label=f"{label} ({method})",
                markerfacecolor=None if measured else "none", markeredgewidth=2)
        ax.annotate(label, (ms, value), textcoords="offset points", xytext=(7, (6, -14, 16)[i % 3]), fontsize=8)  # near points apart
    front = _pareto_front([(ms, value) for _, ms, value, _ in drawn], metric.higher_is_better)
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], ":", color=GREY, label="Pareto front")
    xs = [ms for _, ms, _, _ in drawn] + ([lat_budget] if lat_budget else [])
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        log_scale(ax.xaxis)
    if lat_budget is not None:
        ax.axvline(lat_budget, color=FAIL, linestyle="--", label=f"latency_p90_ms budget {fmt(lat_budget, 'ms')}")
    if bound is not None:
        ax.axhline(bound, color=FAIL, linestyle="-.", label=bound_label)
    _pareto_limits(ax, metric, [value for _, _, value, _ in drawn], bound, lat_budget)
    if left_out:
        ax.text(0.99, 0.02, "not plotted: " + "; ".join(left_out), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color=GREY)
    ax.set_xlabel("p90 latency (ms), batch 1")
    ax.set_ylabel(q.axis_label(metric))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    both = lat_budget is not None and bound is not None
    ax.set_title("filled: measured, hollow: estimated" + ("; shaded: within both budgets" if both else ""), fontsize=9)
    if lat_budget is None:
        plot.notes.append("no latency_p90_ms budget in the profile: no latency line")
    if bound is None:
        plot.notes.append(bound_label)
    plot.png = png(fig)
    return plot


def _status_color(v: dict[str, Any] | None) -> str:
    return STATUS_COLOR.get(v["status"], GREY) if v else GREY


def _quality_panel(report: dict[str, Any], metric: MetricSpec, ax: Any, notes: list[str]) -> None:
    limits = budgets(report)
    for x, (row, stage_name, step) in enumerate(QUALITY_POINTS):
        value = q.value(report, row)
        if value is None:
            st = stage(report, stage_name)
            status = st["status"] if st else "absent"
            notes.append(f"{metric.name} of {row}: none ({stage_name} stage {status})")
            ax.annotate(f"{stage_name}\n{status}", (x, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=7, color=GREY)
            continue
        budget = step.budget(metric) if step else None
        ax.plot([x], [value], "o", color=_status_color(verdict(report, budget) if budget else None), markersize=9, zorder=3)
        ax.annotate(fmt(value, metric.unit), (x, value), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
        base, limit = (q.value(report, step.before), limits.get(budget)) if step and budget else (None, None)
        if base is not None and limit is not None:
            ax.hlines(q.worst_allowed(metric, base, limit), x - 0.35, x + 0.35, colors=FAIL, linestyles="--", zorder=2)
    values = [(x, q.value(report, row)) for x, (row, _, _) in enumerate(QUALITY_POINTS) if q.value(report, row) is not None]
    if values:
        ax.plot([x for x, _ in values], [y for _, y in values], "-", color=GREY, alpha=0.5, zorder=1)
    ax.set_xticks(range(len(QUALITY_POINTS)), [r if r == s else f"{r}\n({s})" for r, s, _ in QUALITY_POINTS], fontsize=7)
    ax.set_xlim(-0.5, len(QUALITY_POINTS) - 0.5)
    ax.margins(y=0.12)
    ax.set_ylabel(q.axis_label(metric))
    ax.set_title(f"{metric.name}; red dashes: {'lowest' if metric.higher_is_better else 'highest'} allowed by the budget", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def _size_panel(report: dict[str, Any], ax: Any, notes: list[str]) -> None:
    metrics = {k: m for s in report.get("stages", []) for k, m in s.get("metrics", {}).items()}
    limit = budgets(report).get("size_mb")
    sizes = []
    for x, (key, stage_name) in enumerate(SIZE_STEPS):
        metric = metrics.get(f"{key}.size_mb")
        if metric is None or metric["value"] is None:
            st = stage(report, stage_name)
            status = st["status"] if st else "absent"
            notes.append(f"size of {key}: none ({stage_name} stage {status})")
            ax.annotate(f"{stage_name}\n{status}", (x, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=7, color=GREY)
            continue
        sizes.append(metric["value"])
        ax.bar([x], [metric["value"]], color=_status_color(verdict(report, "size_mb", f"{key}.size_mb")), width=0.6)
        ax.annotate(fmt(metric["value"], "MB"), (x, metric["value"]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    if limit is not None:
        ax.axhline(limit, color=FAIL, linestyle="--", label=f"size_mb budget {fmt(limit, 'MB')}")
        ax.legend(fontsize=7, loc="upper right")
    if sizes and min(sizes) > 0 and max(sizes + [limit or 0]) / min(sizes) > 20:
        log_scale(ax.yaxis)
    ax.set_xticks(range(len(SIZE_STEPS)), [f"{k}\n({s})" for k, s in SIZE_STEPS], fontsize=7)
    ax.set_xlim(-0.5, len(SIZE_STEPS) - 0.5)
    ax.set_ylabel("file size (MB = 10^6 bytes)")
    ax.set_title("model file size", fontsize=8)


def waterfall(report: dict[str, Any]) -> Plot:
    """The task metric after each stage (teacher -> student -> onnx_fp32 -> int8 -> engine) and the
    size of each model file, against the profile's budgets; points and bars coloured by their verdict."""
    metric = q.report_metric(report)
    plot = Plot("waterfall", f"Stage waterfall: {metric.name} and size after each stage")
    if not any(q.value(report, row) is not None for row, _, _ in QUALITY_POINTS):
        plot.missing = f"no {metric.name} measured: " + "; ".join(
            f"{s['name']} {s['status']}" for s in report.get("stages", []) if s["name"] in {st for _, st, _ in QUALITY_POINTS})
        return plot
    fig, (quality_ax, size_ax) = figure(width=9.0, height=4.2, ncols=2)
    _quality_panel(report, metric, quality_ax, plot.notes)
    _size_panel(report, size_ax, plot.notes)
    fig.suptitle("green: budget holds, red: budget fails, grey: no budget", fontsize=8)
    plot.notes.append(f"values: report.json {metric.name} and <model>.size_mb metrics (measured); budgets: the profile's")
    plot.png = png(fig)
    return plot
