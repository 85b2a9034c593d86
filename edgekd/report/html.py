"""report.html: the report as one self-contained page, a view of report.json like report.md.
Inline CSS, figures as base64 PNG (plots.py, plots_latency.py), no scripts, nothing fetched: the
page's Content-Security-Policy lets it load data: images and nothing else."""
from __future__ import annotations

import base64
from html import escape
from typing import Any

from edgekd.report import lm, mixed_precision, plots, plots_decoder, plots_latency
from edgekd.report import markdown_tuning_cost as tuning_cost
from edgekd.report import quality as q
from edgekd.report.format import broken, fmt, relation

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1000px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; } h3 { margin-bottom: .3em; }
.banner { padding: .7em 1em; border-radius: 4px; font-weight: bold; color: #fff; }
.banner.pass { background: #2e7d32; } .banner.fail { background: #c62828; }
table { border-collapse: collapse; margin: .5em 0; display: block; max-width: 100%; overflow-x: auto; } th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; white-space: nowrap; } td.how { color: #555; font-size: .9em; }
.pass { color: #2e7d32; } .fail { color: #c62828; font-weight: bold; } .muted { color: #757575; }
.banner.pass, .banner.fail { color: #fff; }
figure { margin: 1em 0; padding: .5em; border: 1px solid #e3e3e3; border-radius: 4px; }
figcaption { font-weight: bold; margin-bottom: .4em; } figure img { max-width: 100%; height: auto; display: block; }
p.missing { background: #fff8e1; border-left: 4px solid #f9a825; padding: .5em .8em; margin: .3em 0; }
ul.notes { font-size: .85em; color: #555; margin: .4em 0 0; } footer { margin-top: 2em; font-size: .85em; color: #757575; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[str]]) -> str:
    """A table of already-escaped cells (`<td ...>` given whole when a cell starts with '<td')."""
    def cells(row: list[str]) -> str:
        return "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row)

    return ("<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(f"<tr>{cells(r)}</tr>" for r in rows) + "</tbody></table>")


def _num(value: Any, unit: str = "", how: str | None = None) -> str:
    title = f' title="{_e(how)}"' if how else ""
    return f'<td class="num"{title}>{_e(fmt(value, unit))}</td>'


def _status(status: str) -> str:
    css = {"pass": "pass", "fail": "fail"}.get(status, "muted")
    return f'<td class="{css}">{_e(status.upper() if status == "fail" else status)}</td>'


def _banner(report: dict[str, Any]) -> str:
    if report["verdict"] == "pass":
        return '<div class="banner pass">PASS: every budget holds</div>'
    failed = "; ".join(f"{v['stage']}: {v['budget']} = {fmt(v['value'], v['unit'])} {broken(v)} {fmt(v['limit'], v['unit'])}"
                       for v in report["failed_budgets"])
    return f'<div class="banner fail">FAIL: {_e(failed)}</div>'


def _summary(report: dict[str, Any]) -> str:
    project, target, profile, host = report["project"], report["target"], report["profile"], report["host"]
    rows = [["project", f"{_e(project['name'])} <span class=muted>({_e(project['via'])}; {_e(project['file'])})</span>"],
            ["target", f"{_e(target['name'])}: {_e(target.get('runtime', ''))} <span class=muted>({_e(target['via'])})</span>"],
            ["profile", f"{_e(profile['name'])} <span class=muted>({_e(profile['file'])})</span>"],
            ["task", _e(q.describe(report))],
            ["host", _e(f"{host['cpu']}, {host['cores']} cores, {host['os']}, Python {host.get('python', '?')}")],
            ["toolchain", _e(", ".join(f"{k} {v}" for k, v in report["toolchain"].items()))],
            ["built", _e(f"{report['created_at']} by edgekd {report['edgekd_version']}")]]
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _quality(report: dict[str, Any]) -> str:
    rows, measured = [], q.quality(report)
    for key, label in q.QUALITY_ROWS:
        m = measured.get(key)
        rows.append([_e(label), _num(m["value"], m["unit"], f"{m['method']}: {m['how']}"), _e(m["method"]), f'<td class="how">{_e(m["how"])}</td>']
                    if m else [_e(label), '<td class="muted">not run</td>', "", ""])
    return _table(["model", q.report_metric(report).name, "method", "how obtained"], rows)


def _language_model(report: dict[str, Any]) -> str:
    """The LM numbers (edgekd.report.lm) and the decoder figure; nothing for a report without them."""
    rows = lm.lm_rows(report)
    if not rows:
        return ""
    table = _table(["number", "value", "method", "how obtained"],
                   [[_e(r.label), f'<td class="num" title="{_e(r.how)}">{_e(r.value)}</td>', _e(r.method), f'<td class="how">{_e(r.how)}</td>']
                    for r in rows])
    return (f"<h2>Language model</h2>{table}<p class=muted>{_e(lm.host_line(report))}</p>"
            + _figure(plots_decoder.decoder(report)))


def _figure(plot: plots.Plot) -> str:
    body = (f'<img alt="{_e(plot.title)}" src="data:image/png;base64,{base64.b64encode(plot.png).decode("ascii")}">'
            if plot.png is not None else f'<p class="missing">{_e(plot.missing)}</p>')
    notes = "".join(f"<li>{_e(n)}</li>" for n in plot.notes)
    return (f'<figure id="fig-{plot.key}"><figcaption>{_e(plot.title)}</figcaption>{body}'
            + (f'<ul class="notes">{notes}</ul>' if notes else "") + "</figure>")


def _latency(report: dict[str, Any]) -> str:
    lat = report["latency"]
    if lat is None:
        return '<p class="missing">Not measured: the bench stage did not run.</p>'
    if lat.get("method") == "estimated":
        assumptions = "".join(f"<li>{_e(a)}</li>" for a in lat.get("assumptions", []))
        return (f"<p><b>Estimated, not measured: {_e(fmt(lat.get('latency_ms'), 'ms'))}</b> at batch {_e(lat.get('batch', 1))} "
                f"({_e(lat.get('where', ''))}).</p><p>Assumptions:</p><ul>{assumptions}</ul>")
    how = f"measured: {lat.get('where', 'this host')}"
    keys = (("p50_ms", "ms"), ("p90_ms", "ms"), ("p99_ms", "ms"), ("mean_ms", "ms"), ("min_ms", "ms"), ("max_ms", "ms"),
            ("throughput_per_s", "/s"), ("engine_rss_mb", "MiB"), ("peak_rss_mb", "MiB"))
    head = ["p50", "p90", "p99", "mean", "min", "max", "throughput", "engine RSS", "peak RSS", "runs", "threads"]
    return (_table(head,
                   [[_num(lat.get(k), unit, how) for k, unit in keys] + [_num(lat.get("runs")), _num(lat.get("intra_op_threads"))]])
            + f"<p class=muted>{_e(how)}; the raw samples are in report.json under latency.samples_ms.</p>")


def _devices(report: dict[str, Any]) -> str:
    results = report.get("device_results") or []
    if not results:
        return ""
    rows = [[_e(r["source"])] + [_num(r["latency"].get(k), "ms") for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")]
            + [_num(r["latency"].get("runs")), _e(f"{r.get('runtime', '')} {r.get('runtime_version', '')}".strip()),
               _e(r.get("measured_at", ""))] for r in results]
    return "<h3>Measured on a device (edgekd bench --device)</h3>" + _table(
        ["device", "p50", "p90", "p99", "mean", "runs", "runtime", "measured at"], rows)


def _mixed_precision(report: dict[str, Any]) -> str:
    """The x86 tuner's accuracy-aware mixed precision (edgekd.report.mixed_precision.view)."""
    v = mixed_precision.view(report.get("tuning"))
    if v is None:
        return ""
    out = f"<h3>Mixed precision (ops kept in float)</h3><p>{_e(v['trigger'])}</p>"
    if not v["ran"]:
        return out + f"<p class=muted>{_e(v['how'])}</p>"
    return (out + f"<p>Kept in float in the chosen engine: <b>{_e(v['kept'])}</b></p>"
            + _table(mixed_precision.STEP_HEAD, [[_e(c) for c in r] for r in v["steps"]])
            + f"<p>{_e(v['sensitivity_title'])}</p>" + _table(mixed_precision.SENSITIVITY_HEAD, [[_e(c) for c in r] for r in v["sensitivity"]])
            + f"<p class=muted>{_e(v['how'])}</p>")


def _tuning_cost(report: dict[str, Any]) -> str:
    """What engine tuning cost: steps, variants, each candidate's timing, what pruning cut (edgekd.report.markdown_tuning_cost.view)."""
    v = tuning_cost.view(report.get("tuning"))
    if v is None:
        return ""
    return ("<h3>Engine tuning cost</h3>" + "".join(f"<p>{_e(line)}</p>" for line in v["lines"])
            + _table(tuning_cost.HEAD, [[_e(c) for c in row] for row in v["rows"]]) + f"<p class=muted>{_e(v['how'])}</p>")


def _stage(stage: dict[str, Any]) -> str:
    seconds = f", {stage['seconds']:.1f} s" if stage["status"] != "not run" and stage.get("seconds") is not None else ""
    out = f'<h3 id="stage-{_e(stage["name"])}">{_e(stage["name"])} <span class=muted>({_e(stage["status"])}{seconds})</span></h3>'
    if stage["status"] == "not run":
        return out + f'<p class="missing">Not run: {_e("; ".join(stage["notes"]))}</p>'
    if stage["metrics"]:
        out += _table(["metric", "value", "method", "how obtained"],
                      [[_e(name), _num(m["value"], m["unit"], m["how"]), _e(m["method"]), f'<td class="how">{_e(m["how"])}</td>']
                       for name, m in stage["metrics"].items()])
    if stage["verdicts"]:
        out += _table(["budget", "on", "value", "limit", "verdict"],
                      [[_e(v["budget"]), _e(v["metric"]), _num(v["value"], v["unit"]),
                        (f'<td class="num">{_e(relation(v))} {_e(fmt(v["limit"], v["unit"]))}</td>' if v["limit"] is not None
                         else '<td class="muted">none set</td>'), _status(v["status"])]
                       for v in stage["verdicts"]])
    notes = list(stage["notes"])
    if stage["status"] == "cached":
        notes.append(f"cached: re-used the outputs of the run at {stage['ran_at']} (key {stage['cache_key'][:12]})")
    return out + ("<ul class=notes>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>" if notes else "")


def render(report: dict[str, Any]) -> str:
    """The whole page for `report` (a report.json document)."""
    import matplotlib

    title = f"edgekd build: {report['project']['name']} -> {report['target']['name']}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>", _banner(report), _summary(report),
        f"<h2>{_e(q.title(q.report_metric(report)))}</h2>", _quality(report), _figure(plots.pareto(report)),
        _language_model(report),
        "<h2>Stages and budgets</h2>", _figure(plots.waterfall(report)),
        "<h2>Latency</h2>", _latency(report), _devices(report), _mixed_precision(report), _tuning_cost(report),
        _figure(plots_latency.cdf(report)), _figure(plots_latency.throughput(report)), _figure(plots_latency.ops(report)),
        "<h2>Stages</h2>", *(_stage(s) for s in report["stages"]),
        f"<footer>A view of report.json (schema version {_e(report['schema_version'])}); "
        f"figures drawn with matplotlib {_e(matplotlib.__version__)} (Agg).</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
