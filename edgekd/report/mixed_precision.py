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


def markdown(tuning: dict[str, Any] | None) -> list[str]:
    """The mixed-precision subsection of the engine tuning section; [] when no search ran."""
    m = (tuning or {}).get("mixed_precision")
    if not m:
        return []
    lines = ["### Mixed precision (ops kept in float)", "", cell(m.get("trigger", "")) + ("." if m.get("trigger") else ""), ""]
    if not m.get("ran"):
        return lines + [cell(m["how"]) + ".", ""]
    kept = m.get("kept_in_float") or []
    lines += [f"Kept in float in the chosen engine: **{cell(', '.join(kept)) if kept else 'none'}**"
              + ("" if kept else " (the chosen engine is not a mixed-precision graph)") + ".", "",
              "| step | ops kept in float | accuracy | drop | holds | p90 |", "|---|---|---|---|---|---|"]
    for s in m["steps"]:
        ops = ", ".join(s["float_ops"]) or "none (full INT8)"
        timed = fmt(s["p90_ms"], "ms") if s.get("p90_ms") is not None else "not timed"
        lines.append(f"| k={s['k']} | {cell(ops)} | {fmt(s['accuracy'], '%')} | {fmt(s['drop_pt'], 'pt')} | "
                     f"{'yes' if s['holds'] else 'no'} | {timed} |")
    top = m["sensitivity"][:10]
    lines += ["", f"Sensitivity (accuracy drop with only that op quantized; {len(top)} most sensitive of {len(m['sensitivity'])}):", "",
              "| op | type | drop |", "|---|---|---|", *(f"| {cell(r['op'])} | {r['op_type']} | {fmt(r['drop_pt'], 'pt')} |" for r in top)]
    return lines + ["", f"How: {cell(m['how'])}; {cell(m['accuracy_is'])}.", ""]
