"""The latency figures of report.html: the empirical CDF of the timed runs, throughput vs batch
(Offline scenario) and the time per op type (measured by ONNX Runtime's profiler, or estimated)."""
from __future__ import annotations

from typing import Any

from edgekd.report.format import fmt
from edgekd.report.plots import BLUE, FAIL, GREY, Plot, budgets, figure, log_scale, png

NOT_RUN = "not measured: the bench stage did not run"
TOP_OPS = 12  # op types drawn; the rest are summed into one bar


def cdf(report: dict[str, Any]) -> Plot:
    """Empirical CDF of latency.samples_ms with p50 / p90 / p99 and the latency budget."""
    plot = Plot("latency-cdf", "Latency distribution (empirical CDF)")
    lat = report.get("latency")
    if lat is None:
        plot.missing = NOT_RUN
        return plot
    if lat.get("method") == "estimated":
        plot.missing = f"estimated, no distribution: {fmt(lat.get('latency_ms'), 'ms')} is one point estimate ({lat.get('where', '')})"
        return plot
    samples = sorted(lat.get("samples_ms") or [])
    if not samples:
        plot.missing = "no distribution: latency.samples_ms is empty or absent"
        return plot
    n = len(samples)
    fig, ax = figure(height=3.8)
    ax.step(samples, [(i + 1) / n for i in range(n)], where="post", color=BLUE, label=f"{n} timed runs")
    for name, style in (("p50", ":"), ("p90", "--"), ("p99", "-.")):
        value = lat.get(f"{name}_ms")
        if value is not None:
            ax.axvline(value, color=GREY, linestyle=style, label=f"{name} {fmt(value, 'ms')}")
    limit = budgets(report).get("latency_p90_ms")
    if limit is not None and limit <= 2 * samples[-1]:
        ax.axvline(limit, color=FAIL, linestyle="--", label=f"latency_p90_ms budget {fmt(limit, 'ms')}")
    elif limit is not None:
        plot.notes.append(f"latency_p90_ms budget {fmt(limit, 'ms')} is off the right edge (slowest run {fmt(samples[-1], 'ms')})")
    if samples[0] > 0 and samples[-1] / samples[0] > 10:
        log_scale(ax.xaxis)
    ax.set_xlabel(f"latency (ms), batch {lat.get('batch', 1)}")
    ax.set_ylabel("fraction of runs at or below")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    plot.notes.insert(0, f"measured: {n} timed runs (latency.samples_ms); {lat.get('where', 'this host')}")
    plot.png = png(fig)
    return plot


def throughput(report: dict[str, Any]) -> Plot:
    """Throughput (and p90) vs batch size from latency.scenarios.Offline.batches."""
    plot = Plot("throughput", "Throughput vs batch (Offline scenario)")
    lat = report.get("latency")
    batches = ((lat.get("scenarios") or {}).get("Offline") or {}).get("batches") if lat else None
    rows = sorted((b for b in batches or [] if b.get("throughput_per_s") is not None), key=lambda b: b["batch"])
    if not rows:
        plot.missing = (NOT_RUN if lat is None else "estimated latency: no throughput measured" if lat.get("method") == "estimated"
                        else "no Offline scenario in this report (latency.scenarios.Offline.batches)")
        return plot
    fig, ax = figure(width=6.0, height=3.4)
    xs = [b["batch"] for b in rows]
    ax.plot(xs, [b["throughput_per_s"] for b in rows], "o-", color=BLUE, label="throughput")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples / s")
    ax.grid(True, alpha=0.3)
    timed = [b for b in rows if b.get("p90_ms") is not None]
    if timed:
        ax2 = ax.twinx()
        ax2.plot([b["batch"] for b in timed], [b["p90_ms"] for b in timed], "s--", color=GREY, label="p90 per batch")
        ax2.set_ylabel("p90 latency per batch (ms)")
        ax2.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="upper left")
    offline = lat["scenarios"]["Offline"]
    plot.notes.append(f"{lat.get('method', 'measured')}: {lat.get('where', 'this host')}; latency.scenarios.Offline: "
                      + offline.get("how", "throughput per batch size"))
    plot.notes.append(", ".join(f"batch {b['batch']}: {fmt(b['throughput_per_s'], '/s')}" for b in rows))
    plot.png = png(fig)
    return plot


def _bars(ax: Any, rows: list[tuple[str, float, str]], hatch: str | None) -> None:
    labels = [r[0] for r in rows][::-1]
    values = [r[1] for r in rows][::-1]
    bars = ax.barh(range(len(rows)), values, color=BLUE, hatch=hatch, edgecolor="white" if hatch is None else "black")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for bar, text in zip(bars, [r[2] for r in rows][::-1]):
        ax.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2), textcoords="offset points", xytext=(3, 0),
                    va="center", fontsize=7)
    ax.set_xlim(0, max(values) * 1.35 if values and max(values) > 0 else 1)
    ax.grid(True, axis="x", alpha=0.3)


def _top(rows: list[tuple[str, float, str]]) -> list[tuple[str, float, str]]:
    """The slowest op types first; past TOP_OPS, the rest as one bar."""
    rows = sorted(rows, key=lambda r: -r[1])
    if len(rows) <= TOP_OPS:
        return rows
    rest = rows[TOP_OPS - 1:]
    total = sum(r[1] for r in rest)
    return rows[:TOP_OPS - 1] + [(f"{len(rest)} other op types", total, fmt(total, "ms"))]


def ops(report: dict[str, Any]) -> Plot:
    """Time per op type: latency.top_ops (ONNX Runtime profiler) or, for estimated latency,
    latency.per_op_type (roofline model), labelled as such."""
    plot = Plot("ops", "Op time breakdown")
    lat = report.get("latency")
    if lat is None:
        plot.missing = NOT_RUN
        return plot
    if lat.get("top_ops"):
        rows = _top([(r["op_type"], r["ms"], f"{fmt(r['ms'], 'ms')}, {r['pct']:.0f}%, {r['nodes']} nodes")
                     for r in lat["top_ops"]])
        title, hatch, xlabel = "measured with ONNX Runtime's profiler", None, "time per inference (ms), measured"
        plot.notes.append(f"measured: latency.top_ops, {lat.get('top_ops_how', 'ONNX Runtime profiler')}; engine: {lat.get('where', 'this host')}")
    elif lat.get("method") == "estimated" and lat.get("per_op_type"):
        rows = _top([(op, r["ms"], f"{fmt(r['ms'], 'ms')}, {r['nodes']} nodes, {r['bound']}-bound")
                     for op, r in lat["per_op_type"].items()])
        title, hatch, xlabel = "ESTIMATED (roofline model), not measured", "//", "time per inference (ms), estimated"
        plot.notes.append(f"estimated: latency.per_op_type, {lat.get('where', 'roofline model')}")
    else:
        plot.missing = "no per-op times in this report (latency.top_ops absent)"
        return plot
    fig, ax = figure(width=7.0, height=1.2 + 0.3 * len(rows))
    _bars(ax, rows, hatch)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    plot.png = png(fig)
    return plot
