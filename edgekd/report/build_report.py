"""report.json: everything a build measured, with provenance, as one versioned document."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from edgekd.common.artefacts import BENCH_JSON, ENGINE_JSON
from edgekd.common.toolchain import host_info, versions
from edgekd.common.version import __version__
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import StageRecord
from edgekd.report import collapse
from edgekd.report.mixed_precision import with_quantize_record
from edgekd.report.quality import QUALITY_ROWS, task_json
from edgekd.tasks.specs import ACCURACY, MetricSpec

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")  # JSON Schema of report.json
TOOLCHAIN = ("torch", "onnx", "onnxscript", "onnxruntime", "numpy", "scikit-learn", "safetensors")


def _source(resolved: Any) -> dict[str, str]:
    return {"name": resolved.name, "file": str(resolved.path), "sha256": resolved.sha256, "via": resolved.via}


def _tuning(records: list[StageRecord], out_dir: Path) -> dict[str, Any] | None:
    """The compile stage's engine tuning (x86), from engine.json; None where it did not tune."""
    engine_file = out_dir / ENGINE_JSON
    if not any(r.name == "compile" and r.status != "not run" for r in records) or not engine_file.is_file():
        return None
    return with_quantize_record(json.loads(engine_file.read_text()).get("tuning"), out_dir)


def quality_tables(metrics: dict[str, Any], metric: MetricSpec) -> dict[str, dict[str, Any]]:
    """report["accuracy"] (always there: `{}` when the task is measured otherwise) and, for another
    metric, report[metric.name]: the metric of each model of QUALITY_ROWS that a stage measured."""
    tables: dict[str, dict[str, Any]] = {ACCURACY.name: {}}
    tables[metric.name] = {row: metrics[f"{row}.{metric.name}"].to_json() for row, _ in QUALITY_ROWS
                           if f"{row}.{metric.name}" in metrics}
    return tables


def make(ctx: EngineContext, records: list[StageRecord], out_dir: Path) -> dict[str, Any]:
    metrics = {k: m for r in records for k, m in r.metrics.items()}
    failed = [v.to_json() for r in records for v in r.failed]
    bench_file = out_dir / BENCH_JSON
    bench_ran = any(r.name == "bench" and r.status != "not run" for r in records)
    report = {
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
        "task": task_json(ctx.task_name, ctx.metric),
        **quality_tables(metrics, ctx.metric),
        "latency": json.loads(bench_file.read_text()) if bench_ran and bench_file.is_file() else None,
        "tuning": _tuning(records, out_dir),
        "inputs": ctx.model_inputs.to_json(),
        **ctx.report_sections(out_dir),  # provenance, lineage, warnings
    }
    found = collapse.section(report)  # generation >= 2: the measured model-collapse curve, or why there is none
    if found is not None:
        report["collapse"] = found
    return report
