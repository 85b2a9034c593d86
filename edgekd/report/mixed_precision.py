"""The report's view of accuracy-aware mixed precision (edgekd.backends.ort.mixed_search): the
quantize stage's record (mixed_precision.json) merged into the tuning record, and its Markdown."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.report.format import cell, fmt

MIXED_JSON = "mixed_precision.json"  # written by the quantize stage (edgekd.stages.mixed_quantize)


def with_quantize_record(tuning: dict[str, Any] | None, out_dir: Path) -> dict[str, Any] | None:
    """`tuning` with the quantize stage's mixed-precision record (when it ran and the tuner did not
    search itself): the step that became student_int8.onnx was timed as the tuner's int8-qdq rows,
    so that step's p90 is their best."""
    path = out_dir / MIXED_JSON
    if tuning is None or "mixed_precision" in tuning or not path.is_file():
        return tuning
    record = json.loads(path.read_text())
    timed = [r["p90_ms"] for r in tuning.get("rows", []) if r["variant"] == "int8-qdq"]
    for step in record.get("steps", []):
        if step.get("variant") is not None and step["float_ops"] == record.get("kept_in_float"):
            step["p90_ms"] = min(timed) if timed else None
            step["timed_as"] = "int8-qdq (student_int8.onnx)"
    chosen = tuning["rows"][tuning["chosen"]]["variant"] if tuning.get("rows") else None
    if chosen != "int8-qdq":
        record = {**record, "kept_in_float_in_int8_graph": record.get("kept_in_float", []), "kept_in_float": []}
    return {**tuning, "mixed_precision": record}


STEP_HEAD = ["step", "ops kept in float", "accuracy", "drop", "holds", "p90"]
SENSITIVITY_HEAD = ["op", "type", "drop"]
TOP = 10  # sensitivity rows shown (report.json has them all)


def view(tuning: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record as text for the Markdown and HTML reports: trigger, kept, step and sensitivity rows
    (cells as plain text), how; None when no search ran."""
    m = (tuning or {}).get("mixed_precision")
    if not m:
        return None
    if not m.get("ran"):
        return {"trigger": m.get("trigger", ""), "ran": False, "how": m["how"]}
    kept = m.get("kept_in_float") or []
    steps = [[f"k={s['k']}", ", ".join(s["float_ops"]) or "none (full INT8)", fmt(s["accuracy"], "%"), fmt(s["drop_pt"], "pt"),
              "yes" if s["holds"] else "no", fmt(s["p90_ms"], "ms") if s.get("p90_ms") is not None else "not timed"] for s in m["steps"]]
    sensitivity = [[r["op"], r["op_type"], fmt(r["drop_pt"], "pt")] for r in m["sensitivity"][:TOP]]
    return {"trigger": m.get("trigger", ""), "ran": True, "steps": steps, "sensitivity": sensitivity,
            "kept": ", ".join(kept) if kept else "none (the chosen engine is not a mixed-precision graph)",
            "sensitivity_title": f"Sensitivity (accuracy drop with only that op quantized; {len(sensitivity)} most sensitive of {len(m['sensitivity'])})",
            "how": f"{m['how']}; {m['accuracy_is']}" + (f"; {m['evaluations']} graphs quantized and scored in {m['seconds']:.1f} s "
                                                         "(wall clock in the build process)" if "seconds" in m else "")}


def markdown(tuning: dict[str, Any] | None) -> list[str]:
    """The mixed-precision subsection of the engine tuning section; [] when no search ran."""
    v = view(tuning)
    if v is None:
        return []
    lines = ["### Mixed precision (ops kept in float)", "", cell(v["trigger"]) + ("." if v["trigger"] else ""), ""]
    if not v["ran"]:
        return lines + [cell(v["how"]) + ".", ""]

    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]

    return [*lines, f"Kept in float in the chosen engine: **{cell(v['kept'])}**.", "", *table(STEP_HEAD, v["steps"]), "",
            f"{v['sensitivity_title']}:", "", *table(SENSITIVITY_HEAD, v["sensitivity"]), "", f"How: {cell(v['how'])}.", ""]
