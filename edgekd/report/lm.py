"""The language-model numbers of a report, as rows every view shows alike (report.md, report.html, the
model card): perplexity per model against the teacher's, next-token agreement with the teacher, time
to first token at the bench's prompt length, decode tokens/s and peak memory, each with how it was
obtained or why it is missing. A report without them (a classifier's) has no rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekd.pipeline.budgets import DECODE_TOKENS_PER_S, PEAK_MEMORY_MB, TTFT_MS
from edgekd.pipeline.evaluation import AGREEMENT
from edgekd.report import quality as q
from edgekd.report.format import fmt

AGREEMENT_ROWS = (("student", "next-token agreement with the teacher: student fp32 (torch)"),
                  ("engine", "next-token agreement with the teacher: engine"))


@dataclass(frozen=True)
class Row:
    label: str
    value: str  # formatted, with its unit; "n/a" where missing
    method: str  # measured, estimated, not available
    how: str  # where and how, or why it is missing


def metrics(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: m for s in report.get("stages", []) for name, m in s.get("metrics", {}).items()}


def is_lm(report: dict[str, Any]) -> bool:
    """A report with the LM numbers: a perplexity task, or a bench with the decoder scenarios."""
    lat = report.get("latency") or {}
    return q.report_metric(report).name == "perplexity" or "ttft" in lat or "decode" in lat


def _row(label: str, m: dict[str, Any] | None, missing: str) -> Row:
    if m is None:
        return Row(label, "n/a", "not available", missing)
    return Row(label, fmt(m["value"], m["unit"]), m["method"], m["how"])


def perplexity_rows(report: dict[str, Any]) -> list[Row]:
    """Each model's task metric and its change against the teacher's, in the metric's direction."""
    measured, metric = q.quality(report), q.report_metric(report)
    teacher = (measured.get("teacher") or {}).get("value")
    rows = []
    for key, label in q.QUALITY_ROWS:
        m = measured.get(key)
        if m is None:
            rows.append(Row(f"{metric.name}: {label}", "n/a", "not available", "its stage did not run"))
            continue
        change = ""
        if key != "teacher" and teacher and m["value"] is not None:
            change = f" ({(m['value'] / teacher - 1.0) * 100.0:+.2f} % vs the teacher)"
        rows.append(Row(f"{metric.name}: {label}", fmt(m["value"], m["unit"]) + change, m["method"], m["how"]))
    return rows


def _prompt_label(report: dict[str, Any]) -> str:
    ttft = (report.get("latency") or {}).get("ttft") or {}
    return f"time to first token (p90) at {ttft['prompt_tokens']} prompt tokens" if "prompt_tokens" in ttft else "time to first token (p90)"


def lm_rows(report: dict[str, Any]) -> list[Row]:
    """Every LM row of `report` (none for a report that is not a language model's)."""
    if not is_lm(report):
        return []
    found = metrics(report)
    bench = "the bench stage did not run, or this report predates these metrics (rebuild to get them)"
    rows = perplexity_rows(report)
    rows += [_row(label, found.get(f"{key}.{AGREEMENT}"), "the evaluate stage did not measure it (it did not run, or the "
                  "report predates next-token agreement)") for key, label in AGREEMENT_ROWS]
    rows += [_row(_prompt_label(report), found.get(TTFT_MS), bench),
             _row("decode tokens/s (greedy, batch 1)", found.get(DECODE_TOKENS_PER_S), bench),
             _row("peak memory of the bench worker", found.get(PEAK_MEMORY_MB), bench)]
    return rows


def host_line(report: dict[str, Any]) -> str:
    """Where measured numbers come from, and how estimated latency is made (QNN, TensorRT)."""
    host, lat = report.get("host") or {}, report.get("latency") or {}
    line = f"Measured numbers: this build host ({host.get('cpu', '?')}, {host.get('cores', '?')} cores, {host.get('os', '?')})"
    if lat.get("method") == "estimated":
        line += (f"; latency for {report.get('target', {}).get('name', 'the target')} is estimated by the roofline latency "
                 "model from the target's [device] figures, and TTFT, decode tokens/s and peak memory are not estimated: "
                 "`edgekd bench --device` measures them on the device")
    return line + "."
