"""report.md and report.html: what engine tuning cost (edgekd.backends.ort.prune) — the seconds of each
tuning step, each variant's build time, each candidate's timing, and the candidates cut before their
full timing. `view` gives it as plain text once; `tuning_cost` (Markdown) and report.html render it."""
from __future__ import annotations

from typing import Any

from edgekd.report.format import cell, fmt

STEPS = (("variants_s", "make the model variants"), ("judge_s", "judge their quality"),
         ("mixed_precision_s", "mixed-precision search"), ("estimate_s", "latency estimates"),
         ("screening_s", "screening round (worker)"), ("full_s", "full rounds (worker)"))
HEAD = ["candidate", "outcome", "screening", "full rounds", "why cut"]


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g} s"


def _candidate(r: dict[str, Any]) -> str:
    session = r.get("session", {})
    numerics = session.get("graph_optimization_level", session.get("inference_precision_hint", ""))
    return f"{r['variant']}, {r.get('threads', '?')} thread(s), {numerics}"


def _made(times: dict[str, Any]) -> str:
    built = [f"{name} {_seconds(s)}" for name, s in times.get("build_s", {}).items() if s is not None]
    if not built:
        return ""
    rest = times.get("variants_s", 0.0) - sum(s for s in times["build_s"].values() if s is not None)
    untimed = f"; {rest:.3g} s of making the variants went to makers without their own timer" if rest > 0.5 else ""
    return (f"Variants the tuner made, timed one by one: {'; '.join(built)} (the others were made by an earlier stage, "
            f"given, or made without a timer of their own{untimed}).")


def view(t: dict[str, Any] | None) -> dict[str, Any] | None:
    """The tuning cost as plain text: "lines" (steps, variants made, estimates), "rows" (HEAD cells per
    candidate, fully timed first), "how"; None for a record without times."""
    times = (t or {}).get("times")
    if not times:
        return None
    steps = [f"{label} {_seconds(times[key])}" for key, label in STEPS if key in times]
    estimates = [f"{name} {fmt(e['latency_ms'], 'ms')}" if e["latency_ms"] is not None else f"{name}: {e['how']}"
                 for name, e in t.get("estimates", {}).items()]
    lines = [f"Steps: {'; '.join(steps)}.", _made(times), f"Latency estimates per variant: {'; '.join(estimates)}." if estimates else ""]
    rows = [(r, "timed in full") for r in t["rows"]] + [(p, f"cut: {p['stage']}") for p in t.get("pruned", [])]
    cells = [[_candidate(r), outcome, _seconds(r.get("timing_s", {}).get("screening")), _seconds(r.get("timing_s", {}).get("full")),
              r.get("why", "")] for r, outcome in rows]
    notes = t.get("pruning", [])
    return {"lines": [line for line in lines if line], "rows": cells,
            "how": f"How: {times.get('how', '')}" + (f"; {'; '.join(notes)}" if notes else "") + "."}


def tuning_cost(t: dict[str, Any]) -> list[str]:
    """The "Tuning cost" block of report.md's engine tuning section; nothing for a record without times."""
    v = view(t)
    if v is None:
        return []
    lines = ["### Tuning cost", ""]
    for line in v["lines"]:
        lines += [cell(line), ""]
    lines += ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in v["rows"]]
    return lines + ["", cell(v["how"]), ""]
