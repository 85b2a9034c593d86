"""check: op support: for every node whether the target runs it, and what falls back."""
from __future__ import annotations

import json
from pathlib import Path

from edgekd.common.artefacts import STUDENT_INT8, SUPPORT_JSON
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Files, Outcome, Stage


def run_check(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    from edgekd.analysis.support import analyze

    report = analyze(inputs[STUDENT_INT8], ctx.target_file.name, ctx.target, inputs=ctx.model_inputs)
    (out / SUPPORT_JSON).write_text(json.dumps(report, indent=1))
    how = f"{report['accelerator']}; fallback: {report['fallback']}"
    off = [n for n in report["nodes"] if n["runs_on"] != "accelerator"]
    return Outcome({
        "check.unsupported_nodes": Metric(report["counts"]["unsupported"], "", "measured", how),
        "check.fallback_nodes_pct": Metric(100.0 * report["node_share_off"], "%", "measured", f"{len(off)} of {len(report['nodes'])} nodes; {how}"),
        "check.fallback_macs_pct": Metric(None, "%", "not available", report["macs_how"]) if report["macs_share_off"] is None else
        Metric(100.0 * report["macs_share_off"], "%", "measured", f"{report['macs_how']}; {how}"),
    }, [*report.get("notes", []), *(f"{n['name']} ({n['op_type']}) -> {n['runs_on']}: {n['reason']}" for n in off[:20])])


CHECK = Stage("check", "op support: which nodes the target's runtime/accelerator runs, and what falls back",
              (STUDENT_INT8,), (SUPPORT_JSON,), ("onnx", "onnxruntime", "onnxruntime-qnn"),
              lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "inputs": c.model_inputs.key()}, run_check)
