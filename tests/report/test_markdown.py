"""edgekd/report/markdown.py render(): stage tables, FAIL marking, pipe escaping, 'not run' stages."""
from __future__ import annotations

import copy
import re
from typing import Any

from edgekd.pipeline.results import Metric, StageRecord, Verdict
from edgekd.report.markdown import render

UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def metric(value: float | int | None, unit: str, how: str = "test") -> Metric:
    return Metric(value, unit, "measured", how)


def stages() -> list[dict[str, Any]]:
    teacher = StageRecord("teacher", "ran", cache_key="a" * 64, seconds=12.34, ran_at="2025-01-01T00:00:00+00:00",
                          metrics={"teacher.accuracy": metric(98.0, "%"), "teacher.params": metric(1234567, "")},
                          notes=["teacher trained here"])
    distill = StageRecord("distill", "cached", cache_key="0123456789abcdef" * 4, seconds=0.01,
                          ran_at="2024-12-31T23:00:00+00:00",
                          metrics={"student.accuracy": metric(92.0, "%")},
                          verdicts=[Verdict("distill_accuracy_drop_pt", "distill", "teacher.accuracy - student.accuracy",
                                            6.0, 3.0, "pt")],
                          notes=["Hinton KD, T=4.0"])
    export = StageRecord("export", "ran", seconds=2.0,
                         metrics={"export.parity_max_abs_diff": metric(5e-06, "", "max |logit difference| over 360 test samples")},
                         verdicts=[Verdict("export_parity_max_abs_diff", "export", "max |onnx - torch| logits", 5e-06, 1e-4, ""),
                                   Verdict("export_accuracy_drop_pt", "export", "student.accuracy - onnx_fp32.accuracy", 0.0, None, "pt")])
    quantize = StageRecord("quantize", "not run", notes=["an earlier stage failed: distill"])
    bench = StageRecord("bench", "ran", seconds=3.0,
                        verdicts=[Verdict("latency_p90_ms", "bench", "latency.p90_ms", None, 1.0, "ms")])
    return [r.to_json() for r in (teacher, distill, export, quantize, bench)]


def report(**changes: Any) -> dict[str, Any]:
    records = stages()
    failed = [v for r in records for v in r["verdicts"] if v["status"] == "fail"]
    data: dict[str, Any] = {
        "schema_version": 1,
        "edgekd_version": "0.1.0",
        "created_at": "2025-01-01T00:00:00+00:00",
        "verdict": "fail" if failed else "pass",
        "failed_budgets": failed,
        "project": {"name": "digits", "file": "/p/edgekd.toml", "sha256": "0" * 64, "via": "--project", "description": ""},
        "target": {"name": "x86-avx2", "file": "/t.toml", "sha256": "1" * 64, "via": "name",
                   "runtime": "onnxruntime-cpu", "description": "d"},
        "profile": {"name": "ci", "file": "/c.toml", "sha256": "2" * 64, "via": "name", "budgets": {}},
        "host": {"cpu": "Test CPU", "machine": "x86_64", "cores": 8, "os": "Linux 6", "python": "3.11"},
        "toolchain": {"torch": "2.13.0", "onnxruntime": "1.23.0"},
        "stages": records,
        "accuracy": {"teacher": metric(98.0, "%", "top-1 on 360 samples").to_json(),
                     "student": metric(92.0, "%", "top-1 on 360 samples").to_json()},
        "latency": None,
    }
    data.update(changes)
    return data


def section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n### ", start + 1)
    end2 = text.find("\n## ", start + 1)
    ends = [e for e in (end, end2) if e != -1]
    return text[start:min(ends)] if ends else text[start:]


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_header_names_project_target_profile_host() -> None:
    text = render(report())
    assert text.startswith("# edgekd build: digits -> x86-avx2\n")
    assert "- project: digits (--project)" in text
    assert "- target: x86-avx2 (onnxruntime-cpu; name)" in text
    assert "- profile: ci" in text
    assert "- host: Test CPU, 8 cores, Linux 6" in text
    assert "- toolchain: torch 2.13.0, onnxruntime 1.23.0" in text
    assert text.endswith("\n")


def test_fail_headline_lists_failed_budgets() -> None:
    text = render(report())
    assert "**FAIL: distill: distill_accuracy_drop_pt = 6 pt > 3 pt**" in text
    assert "PASS" not in text


def test_pass_headline() -> None:
    text = render(report(verdict="pass", failed_budgets=[]))
    assert "**PASS: every budget holds**" in text


def test_accuracy_table_rows_and_not_run() -> None:
    text = render(report())
    acc = section(text, "## Accuracy")
    rows = table_rows(acc)
    assert rows[:2] == ["| model | accuracy | how obtained |", "|---|---|---|"]
    assert "| teacher (torch) | 98% | measured: top-1 on 360 samples |" in rows
    assert "| student fp32 (torch) | 92% | measured: top-1 on 360 samples |" in rows
    assert "| student INT8 (ONNX QDQ) | not run | |" in rows
    assert "| engine | not run | |" in rows
    assert len(rows) == 2 + 5


def test_stage_table_has_metric_and_verdict_rows() -> None:
    text = render(report())
    teacher = section(text, "### teacher")
    assert teacher.startswith("### teacher (ran, 12.3 s)")
    rows = table_rows(teacher)
    assert rows[0] == "| metric | value | budget | verdict | how obtained |"
    assert "| teacher.accuracy | 98% | | | measured: test |" in rows
    assert "| teacher.params | 1,234,567 | | | measured: test |" in rows  # ints with thousands separators
    assert "- teacher trained here" in teacher


def test_failed_verdict_is_marked_fail() -> None:
    distill = section(render(report()), "### distill")
    assert ("| distill_accuracy_drop_pt (teacher.accuracy - student.accuracy) | 6 pt | <= 3 pt | **FAIL** "
            "| computed from the metrics above |") in table_rows(distill)


def test_verdict_statuses_pass_no_budget_not_measured() -> None:
    text = render(report())
    export_rows = table_rows(section(text, "### export"))
    parity = next(r for r in export_rows if r.startswith("| export_parity_max_abs_diff"))
    assert "| 5e-06 | <= 0.0001 | pass |" in parity
    drop = next(r for r in export_rows if r.startswith("| export_accuracy_drop_pt"))
    assert "| 0 pt | <= none set | no budget |" in drop
    bench_rows = table_rows(section(text, "### bench"))
    assert "| latency_p90_ms (latency.p90_ms) | n/a | <= 1 ms | not measured | computed from the metrics above |" in bench_rows
    assert "**FAIL**" not in "\n".join(export_rows + bench_rows)


def test_pipes_in_cells_are_escaped() -> None:
    export = section(render(report()), "### export")
    assert r"max \|onnx - torch\| logits" in export
    assert r"measured: max \|logit difference\| over 360 test samples" in export
    for row in table_rows(export):
        assert len(UNESCAPED_PIPE.findall(row)) == 6, row  # five columns, whatever the cell text


def test_every_table_row_has_its_header_column_count() -> None:
    text = render(report(latency=latency()))
    for block in text.split("\n\n"):
        rows = table_rows(block)
        if rows:
            width = len(UNESCAPED_PIPE.findall(rows[0]))
            assert all(len(UNESCAPED_PIPE.findall(r)) == width for r in rows), block


def test_not_run_stage_shows_reason_and_no_table() -> None:
    quantize = section(render(report()), "### quantize")
    assert quantize.startswith("### quantize (not run)\n")
    assert " s)" not in quantize.splitlines()[0]  # no duration for a stage that did not run
    assert "Not run: an earlier stage failed: distill" in quantize
    assert table_rows(quantize) == []


def test_cached_stage_names_earlier_run_and_short_key() -> None:
    distill = section(render(report()), "### distill")
    assert distill.startswith("### distill (cached, 0.0 s)")
    assert "- cached: re-used the outputs of the run at 2024-12-31T23:00:00+00:00 (key `0123456789ab`)" in distill


def test_stages_appear_in_order() -> None:
    text = render(report())
    positions = [text.index(f"### {name} (") for name in ("teacher", "distill", "export", "quantize", "bench")]
    assert positions == sorted(positions)


def latency() -> dict[str, Any]:
    return {"runs": 12345, "p50_ms": 0.1234, "p90_ms": 0.25, "p99_ms": 1.5, "mean_ms": 0.2, "min_ms": 0.0001,
            "max_ms": 12.0, "throughput_per_s": 5000.0, "intra_op_threads": 4, "peak_rss_mb": 80.0, "engine_rss_mb": None,
            "samples_ms": [0.1] * 3, "batch": 1, "cv": 0.25}


def test_latency_not_measured() -> None:
    text = render(report())
    assert "## Latency\n\nNot measured: the bench stage did not run." in text


def test_latency_table() -> None:
    text = render(report(latency=latency()))
    rows = table_rows(section(text, "## Latency"))
    assert rows[0].startswith("| p50 | p90 | p99 |")
    assert rows[2] == "| 0.123 ms | **0.25 ms** | 1.5 ms | 0.2 ms | 0.0001 ms | 12 ms | 12345 | 0.25 | 4 | n/a | 80 MiB |"
    assert "Measured: on this host (Test CPU), after warm-up" in text


def test_estimated_latency_is_labelled_and_broken_down() -> None:
    estimated = {"method": "estimated", "where": "roofline model with targets/t.toml [device]", "latency_ms": 0.5,
                 "p50_ms": 0.5, "p90_ms": 0.5, "p99_ms": 0.5, "mean_ms": 0.5, "batch": 1,
                 "per_op_type": {"Conv": {"ms": 0.4, "nodes": 2, "macs": 1000, "bound": "compute"},
                                 "Relu": {"ms": 0.1, "nodes": 2, "macs": 0, "bound": "memory"}},
                 "assumptions": ["[device] peak_tops.int8 = 85"]}
    text = render(report(latency=estimated))
    latency_section = section(text, "## Latency")
    assert "**Estimated, not measured: 0.5 ms**" in latency_section
    rows = table_rows(latency_section)
    assert rows[2].startswith("| Conv | 0.4 ms | 2 |") and rows[3].startswith("| Relu |")
    assert "- [device] peak_tops.int8 = 85" in latency_section


def test_render_does_not_modify_report() -> None:
    data = report(latency=latency())
    before = copy.deepcopy(data)
    render(data)
    assert data == before


def test_accuracy_table_escapes_pipes() -> None:
    data = report()
    data["accuracy"]["teacher"] = metric(98.0, "%", "top-1, max |x|").to_json()
    rows = table_rows(section(render(data), "## Accuracy"))
    assert all(len(UNESCAPED_PIPE.findall(r)) == 4 for r in rows)
