"""edgekd/report/html.py render(): report.html, one self-contained page with matplotlib figures.

Unit tests on report dicts shaped like a real build's report.json (measured, estimated, no latency,
a failed build, an older report without latency.compare); one test opens a real build's page in
headless Chromium and checks that every image loads."""
from __future__ import annotations

import base64
import copy
import functools
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import Image

from edgekd.pipeline.results import Metric, StageRecord, Verdict
from edgekd.report import html, plots
from edgekd.report.build_report import SCHEMA_FILE
from edgekd.report.outputs import write_all

FIGURES = ("pareto", "waterfall", "latency-cdf", "throughput", "ops")
BUDGETS = {"distill_accuracy_drop_pt": 3.0, "export_parity_max_abs_diff": 1e-4, "export_accuracy_drop_pt": 0.3,
           "quantize_accuracy_drop_pt": 1.0, "quantize_rule_violations": 0, "fallback_nodes_pct": None, "fallback_macs_pct": None,
           "unsupported_nodes": 0, "overall_accuracy_drop_pt": 3.0, "size_mb": 1.0, "latency_p90_ms": 1.0}
ORT = "onnxruntime 1.32.0 CPUExecutionProvider"
WHERE = "this host (AMD EPYC)"


def m(value: float | None, unit: str, how: str, method: str = "measured") -> Metric:
    return Metric(value, unit, method, how)


def acc(value: float, runtime: str = ORT) -> Metric:
    return m(value, "%", f"top-1 on the 360 held-out test samples, {runtime}")


def drop(budget: str, stage: str, a: str, b: str, accs: dict[str, float]) -> Verdict:
    return Verdict(budget, stage, f"{a}.accuracy - {b}.accuracy", accs[a] - accs[b], BUDGETS[budget], "pt")


def stage_records(accs: dict[str, float], not_run_from: str | None) -> list[StageRecord]:
    """The stages of `edgekd build` with the metrics and verdicts a real build records; from
    `not_run_from` on, the stages are 'not run' as after a failed stage in a real build."""
    sizes = {"onnx_fp32": 0.041783, "int8": 0.02278, "engine": 0.011988}

    def size(k: str, stage: str) -> Verdict:
        return Verdict("size_mb", stage, f"{k}.size_mb", sizes[k], BUDGETS["size_mb"], "MB")

    torch = "torch 2.13.0+cpu eager, CPU"
    records = [
        StageRecord("teacher", "ran", "a" * 64, 8.8, "2026-11-23T18:56:34+00:00",
                    metrics={"teacher.accuracy": acc(accs["teacher"], torch), "teacher.params": m(160074, "", "parameters of the torch module")},
                    notes=["teacher trained here: 15 epochs on 1257 samples"]),
        StageRecord("distill", "cached", "b" * 64, 0.01, "2026-11-23T18:50:00+00:00",
                    metrics={"student.accuracy": acc(accs["student"], torch)},
                    verdicts=[drop("distill_accuracy_drop_pt", "distill", "teacher", "student", accs)]),
        StageRecord("export", "ran", "c" * 64, 2.9, "2026-11-23T18:56:42+00:00",
                    metrics={"onnx_fp32.accuracy": acc(accs["onnx_fp32"]), "onnx_fp32.size_mb": m(sizes["onnx_fp32"], "MB", "file size of student.onnx"),
                             "export.parity_max_abs_diff": m(7.6e-06, "", "max |logit difference| over 360 test samples")},
                    verdicts=[Verdict("export_parity_max_abs_diff", "export", "max |onnx - torch| logits", 7.6e-06, 1e-4, ""),
                              drop("export_accuracy_drop_pt", "export", "student", "onnx_fp32", accs)]),
        StageRecord("quantize", "ran", "d" * 64, 0.09, "2026-11-23T18:56:43+00:00",
                    metrics={"int8.accuracy": acc(accs["int8"]), "int8.size_mb": m(sizes["int8"], "MB", "file size of student_int8.onnx")},
                    verdicts=[drop("quantize_accuracy_drop_pt", "quantize", "onnx_fp32", "int8", accs), size("int8", "quantize")]),
        StageRecord("compile", "ran", "e" * 64, 0.01, "2026-11-23T18:56:43+00:00",
                    metrics={"engine.size_mb": m(sizes["engine"], "MB", "file size of engine/engine.onnx")}, verdicts=[size("engine", "compile")]),
        StageRecord("evaluate", "ran", "f" * 64, 0.004, "2026-11-23T18:56:43+00:00", metrics={"engine.accuracy": acc(accs.get("engine", 0.0))},
                    verdicts=[drop("overall_accuracy_drop_pt", "evaluate", "teacher", "engine", accs)]),
        StageRecord("bench", "ran", "0" * 64, 0.46, "2026-11-23T18:56:43+00:00"),
    ]
    if not_run_from is not None:
        names = [r.name for r in records]
        first = names.index(not_run_from)
        why = f"an earlier stage failed: {names[first - 1]}" if first else "the search stage failed"
        records[first:] = [StageRecord(name, "not run", notes=[why]) for name in names[first:]]
    return records


def measured_latency(new_keys: bool = True) -> dict[str, Any]:
    """bench.json of a measured run: 400 samples (a lognormal spread like a CPU's), their percentiles and,
    with `new_keys`, latency.compare / scenarios.Offline / top_ops."""
    samples = (0.027 + np.random.default_rng(0).lognormal(-7.5, 1.0, 400)).round(6).tolist()
    stats = {"runs": 400, "p50_ms": float(np.percentile(samples, 50)), "p90_ms": float(np.percentile(samples, 90)),
             "p99_ms": float(np.percentile(samples, 99)), "mean_ms": float(np.mean(samples)), "min_ms": min(samples),
             "max_ms": max(samples), "throughput_per_s": 1000 / float(np.mean(samples))}
    lat = {**stats, "samples_ms": samples, "batch": 1, "intra_op_threads": 2, "peak_rss_mb": 79.7, "engine_rss_mb": 31.8,
           "method": "measured", "where": WHERE}
    if new_keys:
        lat["cv"] = float(np.std(samples) / np.mean(samples))
        lat["scenarios"] = {"SingleStream": {**stats, "cv": lat["cv"]}}
        lat["compare"] = {"teacher": {"p90_ms": 0.41, "method": "measured", "how": "PyTorch 2.13.0+cpu eager fp32, batch 1"},
                          "student_fp32": {"p90_ms": 0.052, "method": "measured", "how": f"the fp32 student (student.onnx) in {ORT}"},
                          "engine": {"p90_ms": stats["p90_ms"], "method": "measured", "how": WHERE}}
        lat["scenarios"]["Offline"] = {"best_batch": 16, "throughput_per_s": 410000.0, "how": "batch sizes doubled from 1",
                                        "batches": [{"batch": b, "throughput_per_s": t, "p90_ms": b * 1000 / t * 1.1, "mean_ms": b * 1000 / t,
                                                     "runs": 100} for b, t in ((1, 33000.0), (2, 61000.0), (4, 120000.0), (8, 260000.0), (16, 410000.0))]}
        lat["top_ops"] = [{"op_type": op, "ms": ms, "pct": pct, "nodes": n} for op, ms, pct, n in
                          (("QLinearConv", 0.012, 55.0, 2), ("MaxPool", 0.004, 18.0, 2), ("QGemm", 0.003, 14.0, 2), ("Reshape", 0.0028, 13.0, 1))]
        lat["top_ops_how"] = "ONNX Runtime profiler (SessionOptions.enable_profiling), 20 runs at batch 1"
    return lat


def estimated_latency() -> dict[str, Any]:
    where = "estimated (nothing here runs the target): roofline model with targets/npu.toml [device] figures (npu)"
    return {"method": "estimated", "where": where, "latency_ms": 0.5, "p50_ms": 0.5, "p90_ms": 0.5, "p99_ms": 0.5, "mean_ms": 0.5,
            "batch": 1, "precision": "int8", "assumptions": ["[device] peak_tops.int8 = 26"],
            "per_op_type": {"Conv": {"ms": 0.4, "nodes": 2, "macs": 150000, "bound": "compute"},
                            "Relu": {"ms": 0.1, "nodes": 2, "macs": 0, "bound": "memory"}},
            "compare": {"teacher": {"p90_ms": None, "method": "not measured", "how": "a torch teacher has no graph for the target's latency model"},
                        "student_fp32": {"p90_ms": 1.2, "method": "estimated", "how": "the fp32 student as fp16: roofline model"},
                        "engine": {"p90_ms": 0.5, "method": "estimated", "how": where}}}


def report(latency: Any = "measured", not_run_from: str | None = None, int8: float = 98.61) -> dict[str, Any]:
    accs = {"teacher": 98.89, "student": 98.61, "onnx_fp32": 98.61, "int8": int8, "engine": int8}
    records = stage_records(accs, not_run_from)
    metrics = {k: v for r in records for k, v in r.metrics.items()}
    failed = [v.to_json() for r in records for v in r.failed]
    source = {"file": "/work/main/x.toml", "sha256": "0" * 64, "via": "name"}
    data = {
        "schema_version": 1, "edgekd_version": "0.1.0", "created_at": "2026-11-23T18:56:43+00:00",
        "verdict": "fail" if failed else "pass", "failed_budgets": failed,
        "project": {**source, "name": "digits", "description": "digits"},
        "target": {**source, "name": "x86-avx2", "runtime": "onnxruntime-cpu", "description": "x86-64 CPU with AVX2"},
        "profile": {**source, "name": "default", "budgets": dict(BUDGETS)},
        "host": {"cpu": "AMD EPYC", "machine": "x86_64", "cores": 2, "os": "Linux 6.18", "python": "3.11.7"},
        "toolchain": {"torch": "2.13.0+cpu", "onnxruntime": "1.32.0"},
        "stages": [r.to_json() for r in records],
        "accuracy": {k: metrics[f"{k}.accuracy"].to_json() for k in accs if f"{k}.accuracy" in metrics},
        "latency": {"measured": measured_latency, "legacy": lambda: measured_latency(False), "estimated": estimated_latency,
                    None: lambda: None}[latency](),
    }
    for stage in data["stages"]:
        conforms(stage, "stage")
    if latency != "legacy":  # a report from before latency.scenarios / compare / top_ops
        conforms(data["latency"], "latency")
    return data


@functools.cache
def validator(definition: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]})


def conforms(part: Any, definition: str) -> None:
    """`part` is valid as report.schema.json's $defs/`definition` (the parts the page draws; the whole
    document also holds sections the page does not show)."""
    if part is not None:
        validator(definition).validate(part)


@functools.cache
def rendered(latency: Any = "measured", not_run_from: str | None = None, int8: float = 98.61) -> str:
    """The rendered page of `report(...)`, drawn once per test module (matplotlib takes a second)."""
    return html.render(report(latency, not_run_from, int8))


def figures(page: str) -> dict[str, str]:
    return dict(re.findall(r'<figure id="fig-([\w-]+)">(.*?)</figure>', page, re.S))


def png_size(block: str) -> tuple[int, int]:
    """Width and height of the one PNG embedded in a figure block, decoded by Pillow."""
    (data,) = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', block)
    return Image.open(io.BytesIO(base64.b64decode(data))).size


def missing(block: str) -> str:
    (text,) = re.findall(r'<p class="missing">(.*?)</p>', block, re.S)
    return text


def test_measured_report_has_every_figure_as_embedded_png() -> None:
    page = rendered()
    blocks = figures(page)
    assert list(blocks) == list(FIGURES)
    for key in FIGURES:
        width, height = png_size(blocks[key])
        assert width > 100 and height > 100, key
        assert 'class="missing"' not in blocks[key], key


def test_page_is_self_contained() -> None:
    page = rendered()
    assert page.startswith("<!DOCTYPE html>")
    assert f'content="{html.CSP}"' in page and "img-src data:" in html.CSP and "default-src 'none'" in html.CSP
    assert "<script" not in page and "<link" not in page and "url(" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # every source is inline data


def test_pareto_notes_say_how_each_point_was_obtained() -> None:
    notes = figures(rendered())["pareto"]
    assert "teacher (torch): p90 0.41 ms (measured: PyTorch 2.13.0+cpu eager fp32, batch 1), accuracy 98.89%" in notes
    assert "student fp32 (torch): p90 0.052 ms (measured: the fp32 student (student.onnx) in" in notes
    assert "engine: p90 " in notes and "(measured: this host (AMD EPYC))" in notes


def test_pareto_front_keeps_points_nothing_beats() -> None:
    # (latency, accuracy): the slow accurate teacher, a fast student, and a point both of them beat
    assert plots._pareto_front([(0.4, 98.9), (0.03, 98.6), (0.5, 97.0), (0.05, 98.6)]) == [(0.03, 98.6), (0.4, 98.9)]


def test_estimated_latency_has_no_distribution_and_labels_estimates() -> None:
    blocks = figures(rendered(latency="estimated"))
    assert missing(blocks["latency-cdf"]).startswith("estimated, no distribution: 0.5 ms is one point estimate")
    assert "<img" not in blocks["latency-cdf"]
    png_size(blocks["ops"])
    assert "estimated: latency.per_op_type" in blocks["ops"]
    png_size(blocks["pareto"])
    assert "(estimated:" in blocks["pareto"]
    assert "teacher (torch): not plotted, no latency (a torch teacher has no graph" in blocks["pareto"]
    assert missing(blocks["throughput"]) == "estimated latency: no throughput measured"


def test_estimated_latency_section_lists_assumptions() -> None:
    page = rendered(latency="estimated")
    assert "<b>Estimated, not measured: 0.5 ms</b>" in page and "<li>[device] peak_tops.int8 = 26</li>" in page


def test_no_latency_says_what_is_missing() -> None:
    text = rendered(latency=None)
    blocks = figures(text)
    assert missing(blocks["pareto"]).startswith("nothing to plot: no model has both an accuracy and a latency (no latency: the bench")
    for key in ("latency-cdf", "throughput", "ops"):
        assert missing(blocks[key]) == "not measured: the bench stage did not run", key
    png_size(blocks["waterfall"])  # accuracy and size do not need latency
    assert "Not measured: the bench stage did not run." in text


def test_report_without_compare_plots_the_engine_alone() -> None:
    blocks = figures(rendered(latency="legacy"))
    png_size(blocks["pareto"])
    assert "teacher and student fp32 latency not measured (this report has no latency.compare)" in blocks["pareto"]
    assert "engine: p90 " in blocks["pareto"]
    png_size(blocks["latency-cdf"])
    assert missing(blocks["ops"]) == "no per-op times in this report (latency.top_ops absent)"
    assert missing(blocks["throughput"]) == "no Offline scenario in this report (latency.scenarios.Offline.batches)"


def test_failed_build_banner_and_missing_stages() -> None:
    data = report(latency=None, not_run_from="compile", int8=93.0)
    assert data["verdict"] == "fail" and "engine" not in data["accuracy"]
    page = html.render(data)
    assert '<div class="banner fail">FAIL: quantize: quantize_accuracy_drop_pt = 5.61 pt &gt; 1 pt</div>' in page
    waterfall = figures(page)["waterfall"]
    png_size(waterfall)
    assert "accuracy of engine: none (evaluate stage not run)" in waterfall
    assert "size of engine: none (compile stage not run)" in waterfall
    assert '<p class="missing">Not run: an earlier stage failed: quantize</p>' in page
    assert '<td class="fail">FAIL</td>' in page


def test_failed_build_with_no_accuracy_has_no_waterfall() -> None:
    data = report(latency=None, not_run_from="teacher")
    assert data["accuracy"] == {}
    assert missing(figures(html.render(data))["waterfall"]).startswith("no accuracy measured: teacher not run; distill not run")


def test_accuracy_table_gives_method_and_how_for_every_value() -> None:
    page = rendered()
    table = page[page.index("<h2>Accuracy</h2>"):page.index('<figure id="fig-pareto">')]
    cells = re.findall(r'<td class="num" title="([^"]*)">([^<]*)</td><td>([^<]*)</td><td class="how">([^<]*)</td>', table)
    assert len(cells) == 5
    for title, value, method, how in cells:
        assert title == f"{method}: {how}" and method == "measured" and value.endswith("%")


def test_device_results_table() -> None:
    data = report(latency=None)
    data["device_results"] = [{"source": "measured on ssh://pi@rpi5", "runtime": "onnxruntime-cpu", "runtime_version": "1.20.1",
                               "measured_at": "2026-11-24T10:00:00+00:00",
                               "latency": {"p50_ms": 0.21, "p90_ms": 0.25, "p99_ms": 0.4, "mean_ms": 0.22, "runs": 300}}]
    page = html.render(data)
    assert "<h3>Measured on a device (edgekd bench --device)</h3>" in page
    assert "<td>measured on ssh://pi@rpi5</td>" in page and "<td>onnxruntime-cpu 1.20.1</td>" in page
    assert '<td class="num">0.25 ms</td>' in page


def test_text_from_the_report_is_escaped() -> None:
    data = report(latency=None)
    data["project"]["name"] = "<script>alert(1)</script>"
    page = html.render(data)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_render_does_not_modify_report() -> None:
    data = report(latency="estimated")
    before = copy.deepcopy(data)
    html.render(data)
    assert data == before


def test_write_all_writes_report_html(tmp_path: Path) -> None:
    write_all(tmp_path, report(latency="estimated"))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"report.html", "report.json", "report.md"} <= names and not [n for n in names if n.endswith(".tmp")]
    assert (tmp_path / "report.html").read_text() == rendered(latency="estimated")


# --- the page in a browser ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Run in the page's head: collects CSP violations, and once everything has loaded writes every image's
# state into the DOM, which --dump-dom prints.
PROBE = """<script>
var violations = [];
document.addEventListener('securitypolicyviolation', function (e) { violations.push(e.blockedURI + ' ' + e.violatedDirective); });
window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (i) { return [i.complete, i.naturalWidth, i.naturalHeight]; });
  var out = document.createElement('pre');
  out.id = 'edgekd-probe';
  out.textContent = JSON.stringify({images: images, violations: violations, figures: document.querySelectorAll('figure').length});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs headless Chromium: apt-get install -y chromium (.ci/run installs it)")
def test_real_build_page_renders_in_chromium(cold_build, tmp_path: Path) -> None:
    assert cold_build.code == 0, cold_build.err
    page = (cold_build.out_dir / "report.html").read_text()
    expected = [Image.open(io.BytesIO(base64.b64decode(d))).size
                for d in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    assert len(expected) >= 3  # Pareto, waterfall and CDF at least: this build measured its latency
    # the probe may run inline scripts; the page's own policy (data: images only) stays as it is
    csp = f'content="{html.CSP}"'
    probe_page = page.replace(csp, f'content="{html.CSP}; script-src \'unsafe-inline\'"', 1).replace("</title>", "</title>" + PROBE, 1)
    test_copy = tmp_path / "report-probe.html"
    test_copy.write_text(probe_page)
    proc = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={tmp_path / 'profile'}",
                           "--dump-dom", test_copy.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (probe,) = re.findall(r'<pre id="edgekd-probe">(.*?)</pre>', proc.stdout, re.S)
    result = json.loads(probe)
    assert result["violations"] == []
    assert result["figures"] == len(FIGURES)
    assert [(w, h) for _, w, h in result["images"]] == expected  # each loaded, at the size of its PNG
    assert all(complete for complete, _, _ in result["images"])
