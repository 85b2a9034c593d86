"""edgekd/report/html.py render(): report.html, one self-contained page with matplotlib figures.

Unit tests on report dicts shaped like a real build's report.json (report_dicts.py: measured, estimated, no latency,
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

import pytest
from PIL import Image
from report_dicts import report

from edgekd.report import html, plots
from edgekd.report.outputs import write_all

FIGURES = ("pareto", "waterfall", "latency-cdf", "throughput", "ops")


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
