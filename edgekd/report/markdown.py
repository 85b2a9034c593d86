"""report.md: one table per stage (metric, value, budget, verdict), then the latency summary."""
from __future__ import annotations

from typing import Any

from edgekd.report import quality as q
from edgekd.report.format import broken, cell, fmt, relation

_MARK = {"pass": "pass", "fail": "**FAIL**", "no budget": "no budget", "not measured": "not measured"}


def _stage_table(stage: dict[str, Any]) -> list[str]:
    lines = [f"### {stage['name']} ({stage['status']}" + (f", {stage['seconds']:.1f} s" if stage["status"] != "not run" else "") + ")", ""]
    if stage["status"] == "not run":
        return lines + ["Not run: " + "; ".join(stage["notes"]), ""]
    lines += ["| metric | value | budget | verdict | how obtained |", "|---|---|---|---|---|"]
    for name, m in stage["metrics"].items():
        lines.append(f"| {name} | {fmt(m['value'], m['unit'])} | | | {cell(m['method'] + ': ' + m['how'])} |")
    for v in stage["verdicts"]:
        limit = fmt(v["limit"], v["unit"]) if v["limit"] is not None else "none set"
        lines.append(f"| {v['budget']} ({cell(v['metric'])}) | {fmt(v['value'], v['unit'])} | {relation(v)} {limit} | {_MARK[v['status']]} | computed from the metrics above |")
    lines.append("")
    lines += [f"- {note}" for note in stage["notes"]]
    if stage["status"] == "cached":
        lines.append(f"- cached: re-used the outputs of the run at {stage['ran_at']} (key `{stage['cache_key'][:12]}`)")
    return lines + [""]


def _estimated(lat: dict[str, Any]) -> list[str]:
    lines = [f"**Estimated, not measured: {fmt(lat['latency_ms'], 'ms')}** at batch 1 ({lat['where']}).", "",
             "| op type | estimated | nodes | MACs | bound by |", "|---|---|---|---|---|"]
    for op_type, row in sorted(lat["per_op_type"].items(), key=lambda kv: -kv[1]["ms"]):
        lines.append(f"| {op_type} | {fmt(row['ms'], 'ms')} | {row['nodes']} | {fmt(row['macs'])} | {row['bound']} |")
    return lines + ["", "Assumptions:", "", *(f"- {cell(a)}" for a in lat["assumptions"])]


def language_model(report: dict[str, Any]) -> list[str]:
    """The LM numbers (edgekd.report.lm), where the report has them."""
    from edgekd.report import lm

    rows = lm.lm_rows(report)
    if not rows:
        return []
    return ["", "## Language model", "", "| number | value | how obtained |", "|---|---|---|",
            *(f"| {cell(r.label)} | {cell(r.value)} | {cell(r.method + ': ' + r.how)} |" for r in rows), "", lm.host_line(report)]


def render(report: dict[str, Any]) -> str:
    from edgekd.report import mixed_precision
    from edgekd.report.markdown_perf import measured_latency, tuning

    verdict = "PASS: every budget holds" if report["verdict"] == "pass" else "FAIL: " + "; ".join(
        f"{v['stage']}: {v['budget']} = {fmt(v['value'], v['unit'])} {broken(v)} {fmt(v['limit'], v['unit'])}" for v in report["failed_budgets"])
    host, metric = report["host"], q.report_metric(report)
    lines = [
        f"# edgekd build: {report['project']['name']} -> {report['target']['name']}", "",
        f"**{verdict}**", "",
        *(f"> **Warning:** {w}\n" for w in report.get("warnings", [])),
        f"- project: {report['project']['name']} ({report['project']['via']})",
        f"- target: {report['target']['name']} ({report['target']['runtime']}; {report['target']['via']})",
        f"- profile: {report['profile']['name']}",
        f"- task: {q.describe(report)}",
        f"- host: {host['cpu']}, {host['cores']} cores, {host['os']}",
        "- toolchain: " + ", ".join(f"{k} {v}" for k, v in report["toolchain"].items()), "",
        f"## {q.title(metric)}", "", f"| model | {metric.name} | how obtained |", "|---|---|---|",
    ]
    rows = q.quality(report)
    for key, label in q.QUALITY_ROWS:
        m = rows.get(key)
        lines.append(f"| {label} | {fmt(m['value'], m['unit'])} | {cell(m['method'] + ': ' + m['how'])} |" if m else f"| {label} | not run | |")
    lines += language_model(report)
    lines += ["", "## Stages", ""]
    for stage in report["stages"]:
        lines += _stage_table(stage)
    lines += ["## Latency", ""]
    lat = report["latency"]
    if lat is None:
        lines.append("Not measured: the bench stage did not run.")
    elif lat.get("method") == "estimated":
        lines += _estimated(lat)
    else:
        lines += measured_latency(lat, host["cpu"])
    lines += ["", *tuning(report.get("tuning")), *mixed_precision.markdown(report.get("tuning"))]
    for result in report.get("device_results", []):
        dev = result["latency"]
        lines += ["", f"### Measured on a device: {result['source']}", "",
                  "| p50 | p90 | p99 | mean | runs | runtime | measured at |", "|---|---|---|---|---|---|---|",
                  f"| {fmt(dev['p50_ms'], 'ms')} | {fmt(dev['p90_ms'], 'ms')} | {fmt(dev['p99_ms'], 'ms')} | {fmt(dev['mean_ms'], 'ms')} "
                  f"| {dev['runs']} | {cell(str(result.get('runtime', '')) + ' ' + str(result.get('runtime_version', '')))} | {result.get('measured_at', '')} |"]
    return "\n".join(lines) + "\n"
