"""report.json: everything a build measured, with provenance, as one versioned document."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import host_info, versions
from edgekd.common.version import __version__
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import StageRecord

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")  # JSON Schema of report.json
TOOLCHAIN = ("torch", "onnx", "onnxscript", "onnxruntime", "numpy", "scikit-learn", "safetensors")
ACCURACY_ROWS = (("teacher", "teacher (torch)"), ("student", "student fp32 (torch)"),
                 ("onnx_fp32", "student fp32 (ONNX)"), ("int8", "student INT8 (ONNX QDQ)"), ("engine", "engine"))


def _source(resolved: Any) -> dict[str, str]:
    return {"name": resolved.name, "file": str(resolved.path), "sha256": resolved.sha256, "via": resolved.via}


def _tuning(records: list[StageRecord], out_dir: Path) -> dict[str, Any] | None:
    """The compile stage's engine tuning (x86), from engine.json; None where it did not tune."""
    engine_file = out_dir / "engine.json"
    if not any(r.name == "compile" and r.status != "not run" for r in records) or not engine_file.is_file():
        return None
    return json.loads(engine_file.read_text()).get("tuning")


def make(ctx: EngineContext, records: list[StageRecord], out_dir: Path) -> dict[str, Any]:
    metrics = {k: m for r in records for k, m in r.metrics.items()}
    failed = [v.to_json() for r in records for v in r.failed]
    bench_file = out_dir / "bench.json"
    bench_ran = any(r.name == "bench" and r.status != "not run" for r in records)
    return {
        "schema_version": SCHEMA_VERSION,
        "edgekd_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "verdict": "fail" if failed else "pass",
        "failed_budgets": failed,
        "project": ctx.report_project(),
        "target": {**_source(ctx.target_file), "runtime": ctx.target.runtime, "description": ctx.target.description},
        "profile": {**_source(ctx.profile_file), "budgets": ctx.profile.budgets.model_dump()},
        "host": host_info(),
        "toolchain": versions(TOOLCHAIN),
        "stages": [r.to_json() for r in records],
        "accuracy": {row: metrics[f"{row}.accuracy"].to_json() for row, _ in ACCURACY_ROWS if f"{row}.accuracy" in metrics},
        "latency": json.loads(bench_file.read_text()) if bench_ran and bench_file.is_file() else None,
        "tuning": _tuning(records, out_dir),
        "inputs": ctx.model_inputs.to_json(),
        **ctx.report_sections(out_dir),  # provenance, lineage, warnings
    }
