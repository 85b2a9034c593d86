"""The build figures of report.html: accuracy vs latency (Pareto view) and the stage waterfall, drawn
with matplotlib's Agg canvas (no display, no pyplot state). The latency figures are in plots_latency.py.

Each figure is a `Plot`: a PNG, or none with `missing` saying what the report lacks, and notes
saying where every plotted number comes from."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from edgekd.report.format import fmt

PASS, FAIL, GREY, BLUE = "#2e7d32", "#c62828", "#757575", "#1565c0"
STATUS_COLOR = {"pass": PASS, "fail": FAIL}
# (report key, label): the models of the Pareto view; latency.compare keys, then report["accuracy"] keys
PARETO_POINTS = (("teacher", "teacher", "teacher (torch)"), ("student_fp32", "student", "student fp32 (torch)"),
                 ("engine", "engine", "engine"))
# (accuracy key, stage that measures it, budget on its drop, the accuracy the drop is from)
ACCURACY_STEPS = (("teacher", "teacher", None, None), ("student", "distill", "distill_accuracy_drop_pt", "teacher"),
                  ("onnx_fp32", "export", "export_accuracy_drop_pt", "student"),
                  ("int8", "quantize", "quantize_accuracy_drop_pt", "onnx_fp32"),
                  ("engine", "evaluate", "overall_accuracy_drop_pt", "teacher"))
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


def accuracy(report: dict[str, Any], key: str) -> float | None:
    metric = report.get("accuracy", {}).get(key)
    return metric["value"] if metric else None


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


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def pareto(report: dict[str, Any]) -> Plot:
    """Accuracy vs p90 latency for teacher / student fp32 / engine, with the latency budget and the
    accuracy floor (teacher accuracy - overall_accuracy_drop_pt)."""
    plot = Plot("pareto", "Accuracy vs latency (Pareto view)")
    lat_points, not_measured = latency_points(report)
    if not_measured:
        plot.notes.append(not_measured)
    drawn: list[tuple[str, float, float, str]] = []
    left_out: list[str] = []
    for lat_key, acc_key, label in PARETO_POINTS:
        point, acc = lat_points.get(lat_key), accuracy(report, acc_key)
        ms = point.get("p90_ms") if point else None
        if ms is None or acc is None:
            why = [w for w, gone in (("latency", ms is None), ("accuracy", acc is None)) if gone]
            left_out.append(f"{label}: no {' and no '.join(why)}")
            plot.notes.append(f"{label}: not plotted, no {' and no '.join(why)}"
                              + (f" ({point['how']})" if point and point.get("how") else ""))
            continue
        drawn.append((label, ms, acc, point.get("method", "measured")))
        plot.notes.append(f"{label}: p90 {fmt(ms, 'ms')} ({point.get('method', 'measured')}: {point.get('how', '')}), "
                          f"accuracy {fmt(acc, '%')}")
    if not drawn:
        plot.missing = "nothing to plot: no model has both an accuracy and a latency" + (f" ({not_measured})" if not_measured else "")
        return plot
    limits = budgets(report)
    lat_budget, drop = limits.get("latency_p90_ms"), limits.get("overall_accuracy_drop_pt")
    teacher = accuracy(report, "teacher")
    floor = teacher - drop if teacher is not None and drop is not None else None
    fig, ax = figure()
    for i, (label, ms, acc, method) in enumerate(drawn):
        measured = method == "measured"
        ax.plot([ms], [acc], "o" if measured else "D", markersize=9, label=f"{label} ({method})",
                markerfacecolor=None if measured else "none", markeredgewidth=2)
        ax.annotate(label, (ms, acc), textcoords="offset points", xytext=(7, (6, -14, 16)[i % 3]), fontsize=8)  # near points apart
    front = _pareto_front([(ms, acc) for _, ms, acc, _ in drawn])
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], ":", color=GREY, label="Pareto front")
    xs = [ms for _, ms, _, _ in drawn] + ([lat_budget] if lat_budget else [])
    if min(xs) > 0 and max(xs) / min(xs) > 10:
        log_scale(ax.xaxis)
    if lat_budget is not None:
        ax.axvline(lat_budget, color=FAIL, linestyle="--", label=f"latency_p90_ms budget {fmt(lat_budget, 'ms')}")
    if floor is not None:
        ax.axhline(floor, color=FAIL, linestyle="-.", label=f"accuracy floor {fmt(floor, '%')} (teacher - {fmt(drop)} pt)")
    accs = [acc for _, _, acc, _ in drawn] + ([floor] if floor is not None else [])
    pad = max(0.5, 0.15 * (max(accs) - min(accs)))
    ax.set_ylim(min(accs) - pad, min(max(accs) + pad, 100.5))
    if lat_budget is not None and floor is not None:  # the corner inside both budgets
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        ax.fill_between([x0, lat_budget], floor, y1, color=PASS, alpha=0.08, zorder=0)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    if left_out:
        ax.text(0.99, 0.02, "not plotted: " + "; ".join(left_out), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color=GREY)
    ax.set_xlabel("p90 latency (ms), batch 1")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("filled: measured, hollow: estimated; shaded: within both budgets" if lat_budget is not None and floor is not None
                 else "filled: measured, hollow: estimated", fontsize=9)
    if lat_budget is None:
        plot.notes.append("no latency_p90_ms budget in the profile: no latency line")
    if floor is None:
        plot.notes.append("no accuracy floor: needs the teacher accuracy and an overall_accuracy_drop_pt budget")
    plot.png = png(fig)
    return plot


def _status_color(v: dict[str, Any] | None) -> str:
    return STATUS_COLOR.get(v["status"], GREY) if v else GREY


def _accuracy_panel(report: dict[str, Any], ax: Any, notes: list[str]) -> None:
    limits = budgets(report)
    for x, (key, stage_name, budget, base) in enumerate(ACCURACY_STEPS):
        acc = accuracy(report, key)
        if acc is None:
            st = stage(report, stage_name)
            status = st["status"] if st else "absent"
            notes.append(f"accuracy of {key}: none ({stage_name} stage {status})")
            ax.annotate(f"{stage_name}\n{status}", (x, 0.02), xycoords=("data", "axes fraction"), ha="center", fontsize=7, color=GREY)
            continue
        v = verdict(report, budget) if budget else None
        ax.plot([x], [acc], "o", color=_status_color(v), markersize=9, zorder=3)
        ax.annotate(fmt(acc, "%"), (x, acc), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
        base_acc, limit = accuracy(report, base) if base else None, limits.get(budget) if budget else None
        if base_acc is not None and limit is not None:
            ax.hlines(base_acc - limit, x - 0.35, x + 0.35, colors=FAIL, linestyles="--", zorder=2)
    values = [(x, accuracy(report, k)) for x, (k, *_) in enumerate(ACCURACY_STEPS) if accuracy(report, k) is not None]
    if values:
        ax.plot([x for x, _ in values], [y for _, y in values], "-", color=GREY, alpha=0.5, zorder=1)
    ax.set_xticks(range(len(ACCURACY_STEPS)), [k if k == s else f"{k}\n({s})" for k, s, _, _ in ACCURACY_STEPS], fontsize=7)
    ax.set_xlim(-0.5, len(ACCURACY_STEPS) - 0.5)
    ax.margins(y=0.12)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("accuracy; red dashes: lowest allowed by the budget", fontsize=8)
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
    """Accuracy after each stage (teacher -> student -> onnx_fp32 -> int8 -> engine) and the size of
    each model file, against the profile's budgets; points and bars coloured by their budget verdict."""
    plot = Plot("waterfall", "Stage waterfall: accuracy and size after each stage")
    if not any(accuracy(report, k) is not None for k, *_ in ACCURACY_STEPS):
        plot.missing = "no accuracy measured: " + "; ".join(f"{s['name']} {s['status']}" for s in report.get("stages", [])
                                                            if s["name"] in {st for _, st, _, _ in ACCURACY_STEPS})
        return plot
    fig, (acc_ax, size_ax) = figure(width=9.0, height=4.2, ncols=2)
    _accuracy_panel(report, acc_ax, plot.notes)
    _size_panel(report, size_ax, plot.notes)
    fig.suptitle("green: budget holds, red: budget fails, grey: no budget", fontsize=8)
    plot.notes.append("values: report.json accuracy and <model>.size_mb metrics (measured); budgets: the profile's")
    plot.png = png(fig)
    return plot
