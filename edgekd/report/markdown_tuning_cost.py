"""report.md: what engine tuning cost (edgekd.backends.ort.prune) — the seconds of each tuning step,
each variant's build time, each candidate's timing, and the candidates cut before their full timing."""
from __future__ import annotations

from typing import Any

from edgekd.report.format import cell, fmt

STEPS = (("variants_s", "make the model variants"), ("judge_s", "judge their quality"),
         ("mixed_precision_s", "mixed-precision search"), ("estimate_s", "latency estimates"),
         ("screening_s", "screening round (worker)"), ("full_s", "full rounds (worker)"))


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g} s"


def _candidate(r: dict[str, Any]) -> str:
    session = r.get("session", {})
    numerics = session.get("graph_optimization_level", session.get("inference_precision_hint", ""))
    return f"{r['variant']}, {r.get('threads', '?')} thread(s), {numerics}"


def _timings(t: dict[str, Any]) -> list[str]:
    rows = [(r, "timed in full") for r in t["rows"]] + [(p, f"cut: {p['stage']}") for p in t.get("pruned", [])]
    lines = ["| candidate | outcome | screening | full rounds | why cut |", "|---|---|---|---|---|"]
    for r, outcome in rows:
        timing = r.get("timing_s", {})
        lines.append(f"| {cell(_candidate(r))} | {outcome} | {_seconds(timing.get('screening'))} | "
                     f"{_seconds(timing.get('full'))} | {cell(r.get('why', ''))} |")
    return lines


def tuning_cost(t: dict[str, Any]) -> list[str]:
    """The "Tuning cost" block of the engine tuning section; nothing for a record without times."""
    times = t.get("times")
    if not times:
        return []
    steps = [f"{label} {_seconds(times[key])}" for key, label in STEPS if key in times]
    built = [f"{name} {_seconds(s)}" for name, s in times.get("build_s", {}).items() if s is not None]
    estimates = [f"{name} {fmt(e['latency_ms'], 'ms')}" if e["latency_ms"] is not None else f"{name}: {e['how']}"
                 for name, e in t.get("estimates", {}).items()]
    lines = ["### Tuning cost", "", f"Steps: {cell('; '.join(steps))}.", ""]
    if built:
        rest = times.get("variants_s", 0.0) - sum(s for s in times["build_s"].values() if s is not None)
        untimed = f"; {rest:.3g} s of making the variants went to makers without their own timer" if rest > 0.5 else ""
        made = (f"Variants the tuner made, timed one by one: {cell('; '.join(built))} (the others were made by an earlier "
                f"stage, given, or made without a timer of their own{untimed}).")
        lines += [made, ""]
    if estimates:
        lines += [f"Latency estimates per variant: {cell('; '.join(estimates))}.", ""]
    lines += _timings(t)
    notes = t.get("pruning", [])
    return lines + ["", f"How: {cell(times.get('how', ''))}" + (f"; {cell('; '.join(notes))}" if notes else "") + ".", ""]
