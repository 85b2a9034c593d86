"""MODEL_CARD.md: what a build's student is, where it came from (teacher, data, distillation,
generation) and how it did on its target against the team's budgets, written from report.json
only, so that every view of the build says the same thing."""
from __future__ import annotations

import json
from typing import Any

from edgekd.common.artefacts import (
    STUDENT_INT8,
    STUDENT_ONNX,
    STUDENT_WEIGHTS,
    TEACHER_WEIGHTS,
)
from edgekd.report import collapse, lm
from edgekd.report import quality as q
from edgekd.report.format import cell, fmt, relation

MISSING = "not recorded: this report.json was written by an edgekd without provenance; rebuild to get it"
MODEL_FILES = (STUDENT_WEIGHTS, STUDENT_ONNX, STUDENT_INT8)


def _metric(m: dict[str, Any] | None) -> str:
    if not m:
        return "not measured"
    return f"{fmt(m['value'], m['unit'])} ({m['method']}: {m['how']})"


def _artefacts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: a for s in report["stages"] for name, a in s["artefacts"].items()}


def _metrics(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: m for s in report["stages"] for name, m in s["metrics"].items()}


def _compiled(report: dict[str, Any]) -> bool:
    return (report.get("provenance") or {}).get("kind") == "compiled"


def _source_model(report: dict[str, Any]) -> list[str]:
    """`edgekd compile`'s model and data, in place of the teacher, data and distillation sections."""
    prov, artefacts = report["provenance"], _artefacts(report)
    lines = ["## Model", "", f"- given model: {cell(prov['model']['file'])} (sha256 `{prov['model']['sha256']}`)",
             *(f"- input {i['name']}: {i['dtype']} {'x'.join(map(str, i['shape']))} ({cell(', '.join(sorted(set(i['sources']))))})"
               for i in report.get("inputs", {}).get("inputs", [])),
             *(f"- optional input {i['name']}: {i['dtype']} {'x'.join(map(str, i['shape']))}, default {i['default']}: {cell(i['how'])}"
               for i in (report.get("tuning") or {}).get("optional_inputs", [])),
             f"- calibration data: {cell(prov['calibration'])}", f"- evaluation data: {cell(prov['evaluation'])}",
             f"- data sha256 `{prov['data_sha256']}`", "", "| file | bytes | sha256 |", "|---|---|---|"]
    names = [n for n in artefacts if n.endswith(".onnx") or n.startswith("engine/")]
    lines += [f"| {n} | {artefacts[n]['bytes']:,} | `{artefacts[n]['sha256']}` |" for n in sorted(names)]
    return lines + ["", "Every ONNX file edgekd wrote carries `edgekd.source_model_sha256` and `edgekd.data_sha256` in its "
                    "`metadata_props` (the engine and bundle models also `edgekd.target`).", ""]


def _summary(report: dict[str, Any]) -> list[str]:
    failed = "; ".join(f"{v['stage']}: {v['budget']}" for v in report["failed_budgets"])
    lin = report.get("lineage")
    host = report["host"]
    return ["| | |", "|---|---|",
            f"| verdict | {'PASS: every budget holds' if report['verdict'] == 'pass' else 'FAIL: ' + cell(failed)} |",
            f"| generation | {lin['generation']} (teacher generation {lin['teacher_generation']}) |" if lin else
            f"| generation | {'not distilled here: a trained model given to edgekd compile' if _compiled(report) else MISSING} |",
            f"| target | {report['target']['name']} ({report['target']['runtime']}) |",
            f"| profile | {report['profile']['name']} |",
            f"| task | {cell(q.describe(report))} |",
            f"| project file | {cell(report['project']['file'])} (sha256 `{report['project']['sha256']}`) |",
            f"| built | {report['created_at']} with edgekd {report['edgekd_version']} on {cell(host['cpu'])} |", ""]


def _model(report: dict[str, Any]) -> list[str]:
    prov, metrics, artefacts = report.get("provenance"), _metrics(report), _artefacts(report)
    student = prov and prov["student"]
    lines = ["## Model", "", f"- student: `{student['factory']}({student['args']})`" if student else "- student: not recorded",
             f"- parameters: {_metric(metrics.get('student.params'))}", f"- MACs at batch 1: {_metric(metrics.get('student.macs'))}", "",
             "| file | bytes | sha256 |", "|---|---|---|"]
    names = [n for n in artefacts if n in MODEL_FILES or n.endswith(".onnx") or n.startswith("engine/")]
    lines += [f"| {n} | {artefacts[n]['bytes']:,} | `{artefacts[n]['sha256']}` |" for n in sorted(names)]
    return lines + ["", "Every ONNX file above carries the provenance in its `metadata_props` (`edgekd.generation`, "
                    "`edgekd.teacher_sha256`, `edgekd.data_sha256`, `edgekd.distill`, ...; the engine and bundle models also "
                    "`edgekd.target`), and student.safetensors in its header (`edgekd.graph.provenance`).", ""]


def _source_rows(source: dict[str, Any], role: str) -> list[str]:
    weight = f", weight {fmt(source['weight'])}" if "weight" in source else ""
    row = [f"| {role} | {source['kind']}{weight} | {cell(source['what'])} | `{source['sha256']}` ({cell(source['sha256_of'])}) "
           f"| {source['generation']} ({cell(source['generation_source'])}) |"]
    return row + [r for i, m in enumerate(source.get("members", [])) for r in _source_rows(m, f"{role} member {i}")]


def _teacher(report: dict[str, Any]) -> list[str]:
    prov = report.get("provenance")
    if prov is None:
        return ["## Teacher", "", MISSING, ""]
    lines = ["## Teacher", "", "| role | kind | what | sha256 (of what) | generation (read from) |", "|---|---|---|---|---|",
             *_source_rows(prov["teacher"], "teacher")]
    lines += [f"| assistant {i} | torch, distilled in the build ({a['epochs'] or prov['distill']['epochs']} epochs) "
              f"| `{a['factory']}({a['args']})` | weights: the assistants stage's assistant.safetensors | {a['generation']} |"
              for i, a in enumerate(prov["assistants"], start=1)]
    metrics, weights, name = _metrics(report), _artefacts(report).get(TEACHER_WEIGHTS), q.report_metric(report).name
    lines += ["", f"- teacher {name}: {_metric(metrics.get(f'teacher.{name}'))}",
              f"- teacher parameters: {_metric(metrics.get('teacher.params'))}"]
    if weights:
        lines.append(f"- weights the build distilled from: teacher.safetensors, sha256 `{weights['sha256']}`")
    return lines + [""]


def _data(report: dict[str, Any]) -> list[str]:
    prov = report.get("provenance")
    if prov is None:
        return ["## Data", "", MISSING, ""]
    d = prov["data"]
    return ["## Data", "", f"- source: `{d['factory']}({d['args']})`" + (f": {d['description']}" if d["description"] else ""),
            f"- sha256 `{d['sha256']}` (inputs and labels of the train, calibration and test splits)",
            f"- input shape {tuple(d['input_shape'])}, {d['num_classes']} classes",
            f"- splits: train {d['splits']['train']:,}, calibration {d['splits']['calib']:,}, test {d['splits']['test']:,} samples", ""]


def _distill(report: dict[str, Any]) -> list[str]:
    prov = report.get("provenance")
    if prov is None:
        return ["## Distillation", "", MISSING, ""]
    d = prov["distill"]
    lines = ["## Distillation", "", "| loss | weight | parameters |", "|---|---|---|"]
    lines += [f"| {s['name']} | {fmt(s['weight'])} | {cell(json.dumps(s['params'], sort_keys=True)) if s['params'] else 'defaults'} |"
              for s in d["losses"]]
    lines += ["", f"- temperature {d['temperature']}, alpha {d['alpha']} (where a loss does not set its own)",
              f"- {d['epochs']} epochs, lr {d['lr']}, batch size {d['batch_size']}, seed {d['seed']}; "
              f"teacher logits {'computed once and cached' if d['teacher_logit_cache'] else 'computed every step'}"]
    notes = next((s["notes"] for s in report["stages"] if s["name"] == "distill"), [])
    return lines + [f"- build note: {cell(n)}" for n in notes] + [""]


def _lineage(report: dict[str, Any]) -> list[str]:
    lin = report.get("lineage")
    if lin is None:
        return ["## Lineage", "", MISSING, ""]
    chain = " -> ".join(f"{link['role']} (generation {link['generation']})" for link in lin["chain"])
    lines = ["## Lineage", "", f"Generation {lin['generation']}: {chain}. A teacher trained from labels is generation 0; "
             "each distillation (each teacher-assistant link too) adds one; an ensemble counts as its highest member.", "",
             "| parent | what | sha256 | generation (read from) |", "|---|---|---|---|"]
    lines += [f"| {p['role']} | {cell(p['what'])} | {'`' + p['sha256'] + '`' if p['sha256'] else 'n/a'} "
              f"| {p['generation']} ({cell(p['generation_source'])}) |" for p in lin["parents"]]
    return lines + [""]


def _latency(report: dict[str, Any]) -> list[str]:
    lat = report["latency"]
    if lat is None:
        lines = ["- latency: not measured (the bench stage did not run)"]
    elif lat.get("method") == "estimated":
        lines = [f"- latency: **estimated, not measured**: {fmt(lat['latency_ms'], 'ms')} at batch 1 ({cell(lat['where'])})"]
    else:
        lines = [f"- latency (measured, batch 1, {lat.get('runs', 'n/a')} runs, {cell(str(lat.get('where', 'this host')))}): "
                 f"p50 {fmt(lat['p50_ms'], 'ms')}, p90 {fmt(lat['p90_ms'], 'ms')}, p99 {fmt(lat['p99_ms'], 'ms')}"]
    for result in report.get("device_results", []):
        dev = result["latency"]
        lines.append(f"- latency measured on a device ({cell(str(result['source']))}): p50 {fmt(dev.get('p50_ms'), 'ms')}, "
                     f"p90 {fmt(dev.get('p90_ms'), 'ms')}")
    return lines


def _evaluation(report: dict[str, Any]) -> list[str]:
    metrics, metric, measured = _metrics(report), q.report_metric(report), q.quality(report)
    lines = [f"## Evaluation on {report['target']['name']}", "", f"{q.title(metric)}: {q.direction(metric)}.", "",
             f"| model | {metric.name} | how obtained |", "|---|---|---|"]
    for key, label in q.QUALITY_ROWS:
        m = measured.get(key)
        lines.append(f"| {label} | {fmt(m['value'], m['unit'])} | {cell(m['method'] + ': ' + m['how'])} |" if m else f"| {label} | not run | |")
    lines += ["", f"- engine size: {_metric(metrics.get('engine.size_mb'))}", f"- INT8 model size: {_metric(metrics.get('int8.size_mb'))}",
              *_latency(report), "", "| stage | budget | value | limit | verdict |", "|---|---|---|---|---|"]
    for stage in report["stages"]:
        for v in stage["verdicts"]:
            limit = fmt(v["limit"], v["unit"]) if v["limit"] is not None else "none set"
            lines.append(f"| {v['stage']} | {v['budget']} ({cell(v['metric'])}) | {fmt(v['value'], v['unit'])} | {relation(v)} {limit} | {v['status']} |")
    return lines + [""] + _language_model(report)


def _language_model(report: dict[str, Any]) -> list[str]:
    """Perplexity against the teacher, next-token agreement, TTFT, decode tokens/s, peak memory (LMs only)."""
    rows = lm.lm_rows(report)
    if not rows:
        return []
    return ["### Language model", "", "| number | value | how obtained |", "|---|---|---|",
            *(f"| {cell(r.label)} | {cell(r.value)} | {cell(r.method + ': ' + r.how)} |" for r in rows), "", lm.host_line(report), ""]


def _toolchain(report: dict[str, Any]) -> list[str]:
    host = report["host"]
    return ["## Toolchain", "", f"- edgekd {report['edgekd_version']}", *(f"- {k} {v}" for k, v in report["toolchain"].items()),
            f"- host: {host['cpu']}, {host['cores']} cores, {host['os']}, Python {host['python']}", ""]


def render(report: dict[str, Any]) -> str:
    what = "model" if _compiled(report) else "student"
    title = f"# Model card: {report['project']['name']} {what} for {report['target']['name']}"
    lines = [title, "", *([report["project"]["description"], ""] if report["project"].get("description") else []),
             *(f"> **Warning:** {w}\n" for w in report.get("warnings", [])), *collapse.card_lines(report), *_summary(report)]
    sections = (_source_model, _evaluation, _toolchain) if _compiled(report) else \
        (_model, _teacher, _data, _distill, _lineage, _evaluation, _toolchain)
    for section in sections:
        lines += section(report)
    lines.append(f"Written from report.json (schema_version {report['schema_version']}); each number is copied from it "
                 "with how it was obtained.")
    return "\n".join(lines) + "\n"
