"""The decoder figure of report.html: the engine's prompt pass (TimeToFirstToken: its timed passes,
sorted, with p90 and the `ttft_ms` budget) beside its per-token decode latency by position in the
generation (DecodeTokensPerSecond: each generation's steps, their median, and the per-token time the
`decode_tokens_per_s` budget allows). Only the engine is drawn: the bench times the teacher and the
fp32 student at batch 1 (SingleStream) but runs the decoder scenarios on the engine alone, and the
figure's notes say so."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.report.format import fmt
from edgekd.report.plots import BLUE, FAIL, GREY, Plot, budgets, figure, png
from edgekd.report.plots_latency import NOT_RUN

COMPARED = "teacher and fp32 student: timed at batch 1 (SingleStream) only; the decoder scenarios run on the engine alone"


def _measured(lat: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    r = (lat or {}).get(key)
    return r if isinstance(r, dict) and r.get("method") == "measured" and r.get("samples_ms") else None


def _missing_reason(report: dict[str, Any]) -> str | None:
    lat = report.get("latency")
    if lat is None:
        return NOT_RUN
    if lat.get("method") == "estimated":
        return "estimated latency: the latency model estimates no prompt pass or decoding (`edgekd bench --device` measures them)"
    if "ttft" not in lat and "decode" not in lat:
        return "not a decoder: no TimeToFirstToken / DecodeTokensPerSecond in this report"
    if _measured(lat, "ttft") is None and _measured(lat, "decode") is None:
        return "; ".join(str((lat.get(k) or {}).get("how", f"{k} not measured")) for k in ("ttft", "decode"))
    return None


def _ttft_panel(ax: Any, r: dict[str, Any] | None, limit: float | None, plot: Plot) -> None:
    if r is None:
        ax.set_axis_off()
        ax.set_title("TimeToFirstToken: not measured", fontsize=9)
        return
    samples = sorted(r["samples_ms"])
    ax.plot(range(1, len(samples) + 1), samples, "o-", color=BLUE, markersize=3, label=f"{len(samples)} prompt passes, sorted")
    ax.axhline(r["p90_ms"], color=GREY, linestyle="--", label=f"p90 {fmt(r['p90_ms'], 'ms')}")
    if limit is not None:
        ax.axhline(limit, color=FAIL, linestyle="--", label=f"ttft_ms budget {fmt(limit, 'ms')}")
    ax.set_xlabel("pass (sorted by time)")
    ax.set_ylabel("time to first token (ms)")
    ax.set_title(f"TimeToFirstToken, {r['prompt_tokens']}-token prompt", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    plot.notes.append(f"measured: latency.ttft.samples_ms; {r.get('where', '')}")


def _decode_panel(ax: Any, r: dict[str, Any] | None, floor: float | None, plot: Plot) -> None:
    if r is None:
        ax.set_axis_off()
        ax.set_title("DecodeTokensPerSecond: not measured", fontsize=9)
        return
    steps = np.asarray(r["samples_ms"], dtype=float)
    tokens = int(r.get("new_tokens") or steps.size)
    runs = steps[: steps.size - steps.size % tokens].reshape(-1, tokens) if tokens and steps.size >= tokens else steps[None]
    positions = np.arange(1, runs.shape[1] + 1)
    for row in runs:
        ax.plot(positions, row, color=BLUE, alpha=0.25, linewidth=0.8)
    ax.plot(positions, np.median(runs, axis=0), color=BLUE, linewidth=2, label=f"median of {runs.shape[0]} generations")
    if floor is not None:
        ax.axhline(1000.0 / floor, color=FAIL, linestyle="--", label=f"decode_tokens_per_s budget {fmt(floor)} (= {fmt(1000.0 / floor, 'ms')}/token)")
    cache = "KV cache" if r.get("kv_cache") else "no KV cache"
    if not r.get("kv_cache"):
        plot.notes.append("no KV cache in the graph: each decode step re-runs the whole sequence")
    ax.set_xlabel("generated token")
    ax.set_ylabel("time per token (ms)")
    ax.set_title(f"decode: {fmt(r['tokens_per_s'], 'tokens/s')} ({cache})", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    plot.notes.append(f"measured: latency.decode.samples_ms (run, argmax, next feed per step); {r.get('where', '')}")


def decoder(report: dict[str, Any]) -> Plot:
    """TTFT passes and per-token decode latency of the engine, with the budgets where set."""
    plot = Plot("decoder", "Decoder: time to first token and per-token decode latency (engine)")
    why = _missing_reason(report)
    if why is not None:
        plot.missing = why
        return plot
    lat, limits = report["latency"], budgets(report)
    fig, (left, right) = figure(width=9.0, height=3.6, ncols=2)
    _ttft_panel(left, _measured(lat, "ttft"), limits.get("ttft_ms"), plot)
    _decode_panel(right, _measured(lat, "decode"), limits.get("decode_tokens_per_s"), plot)
    plot.notes.append(COMPARED)
    plot.png = png(fig)
    return plot
