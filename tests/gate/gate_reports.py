"""The gate's tests compare reports of a real build (the session's cold build of the built-in example,
ci profile: tests/conftest.py) with copies of it whose values the helpers here edit. Each helper says
what it changes; everything else stays as the build measured it. (No conftest.py in this folder: it
would shadow tests/conftest.py, which other tests import as `conftest`.)"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def real_report(cold_build) -> dict[str, Any]:
    """The cold build's report.json (a fresh copy for each test)."""
    assert cold_build.code == 0, cold_build.err
    report = json.loads((cold_build.out_dir / "report.json").read_text())
    assert report["latency"]["method"] == "measured" and len(report["latency"]["samples_ms"]) >= 100
    return report


def edited(report: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(report)


def save(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return path


def slower(report: dict[str, Any], factor: float) -> dict[str, Any]:
    """Every latency sample (and the summary percentiles) multiplied by `factor`."""
    out = edited(report)
    lat = out["latency"]
    lat["samples_ms"] = [s * factor for s in lat["samples_ms"]]
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"):
        lat[key] *= factor
    for stage in out["stages"]:
        for name, metric in stage["metrics"].items():
            if name in ("latency.p50_ms", "latency.p90_ms", "latency.p99_ms", "latency.mean_ms"):
                metric["value"] *= factor
    return out


def estimated(report: dict[str, Any], latency_ms: float) -> dict[str, Any]:
    """The latency as a target without a local runtime records it: a model estimate, no samples."""
    out = edited(report)
    out["latency"] = {"method": "estimated", "where": "estimated (test): roofline model", "latency_ms": latency_ms,
                      "p50_ms": latency_ms, "p90_ms": latency_ms, "p99_ms": latency_ms, "mean_ms": latency_ms, "batch": 1}
    return out


def metric(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s["metrics"][name] for s in report["stages"] if name in s["metrics"])


def with_metric(report: dict[str, Any], name: str, value: float | None) -> dict[str, Any]:
    """Stage metric `name` set to `value` (and the report's quality table with it: report["accuracy"]
    for *.accuracy, report["perplexity"] for *.perplexity)."""
    out = edited(report)
    metric(out, name)["value"] = value
    row, _, quality = name.rpartition(".")
    if row in (out.get(quality) or {}):
        out[quality][row]["value"] = value
    return out


def without_metric(report: dict[str, Any], name: str) -> dict[str, Any]:
    out = edited(report)
    for stage in out["stages"]:
        stage["metrics"].pop(name, None)
    return out
