"""`edgekd gate` end to end: exit codes 0/1/2, the printed summary, --json, --markdown and --junit
(parsed with junitparser). Candidate and baseline are the session's real cold build (ci profile) or
copies of its report.json with edited values (gate_reports.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from gate_reports import real_report, save, slower  # noqa: F401 (fixture)
from junitparser import Failure, JUnitXml, Skipped

pytestmark = pytest.mark.slow
SLOW = 3.0  # see test_gate_checks.py: far beyond this machine's own noise


@pytest.fixture
def build_dir(cold_build) -> Path:
    assert cold_build.code == 0, cold_build.err
    return cold_build.out_dir


def test_same_build_exits_0_with_one_line_per_check(edgekd, build_dir):
    run = edgekd("gate", str(build_dir), "--baseline", str(build_dir / "report.json"))
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[-1].startswith("edgekd gate: PASS: 0 of ")
    assert any(line.split()[1:3] == ["latency", "p90"] for line in lines)
    assert sum(" budget " in line for line in lines) == sum(len(s["verdicts"]) for s in json.loads((build_dir / "report.json").read_text())["stages"])


def test_slower_candidate_exits_1_and_writes_markdown_and_junit(edgekd, build_dir, real_report, tmp_path):
    cand = save(slower(real_report, SLOW), tmp_path / "cand" / "report.json")
    md, xml = tmp_path / "out" / "gate.md", tmp_path / "out" / "gate.xml"
    run = edgekd("gate", str(cand.parent), "--baseline", str(build_dir), "--markdown", str(md), "--junit", str(xml))
    assert run.code == 1
    assert run.err.strip() == "edgekd: error: gate failed: latency p90 (hint: see the table above or --markdown)"
    assert run.out.splitlines()[-1].startswith("edgekd gate: FAIL: 1 of ")

    text = md.read_text()
    assert text.startswith("## edgekd gate: **FAIL**")
    assert "| check | baseline | candidate | change | confidence interval | threshold | verdict |" in text
    row = next(line for line in text.splitlines() if line.startswith("| **latency p90**"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "**+200.00 %**" and cells[5] == "**<= +10 %**" and cells[6] == "**FAIL**"
    assert cells[4].startswith("**+") and " .. +" in cells[4]  # the interval of the change, in %
    assert "engine accuracy" in text and "circular block bootstrap" in text

    suites = list(JUnitXml.fromfile(str(xml)))
    assert len(suites) == 1
    cases = {case.name: case for case in suites[0]}
    assert suites[0].tests == len(cases) and suites[0].failures == 1
    assert any(isinstance(r, Failure) for r in cases["latency p90"].result)
    assert cases["engine accuracy"].is_passed and cases["size (engine.size_mb)"].is_passed
    no_budget = [name for name, case in cases.items() if any(isinstance(r, Skipped) for r in case.result)]
    assert no_budget == ["budget fallback_nodes_pct (check)", "budget fallback_macs_pct (check)",
                         "budget peak_memory_mb (bench)"]  # ci sets none; a classifier's bench measures peak memory too
    assert cases["peak memory"].is_passed and "time to first token p90" not in cases  # no decoder checks for a classifier


def test_not_measured_latency_is_skipped_not_passed(edgekd, build_dir, real_report, tmp_path):
    cand = save({**real_report, "latency": None}, tmp_path / "cand.json")
    xml = tmp_path / "gate.xml"
    run = edgekd("gate", str(cand), "--baseline", str(build_dir), "--junit", str(xml))
    assert run.code == 0, run.err  # nothing broke a threshold; the line says what was not checked
    assert any(line.split()[:4] == ["not", "measured", "latency", "p90"] for line in run.out.splitlines())
    case = next(c for c in next(iter(JUnitXml.fromfile(str(xml)))) if c.name == "latency p90")
    assert case.is_skipped and "bench stage did not run" in case.result[0].message


def test_decoder_thresholds_from_the_command_line(edgekd, build_dir, tmp_path):
    run = edgekd("gate", str(build_dir), "--baseline", str(build_dir), "--json", "--max-ttft-increase-pct", "33",
                 "--max-decode-tokens-per-s-decrease-pct", "44", "--max-peak-memory-increase-pct", "55")
    assert run.code == 0, run.err
    gate = json.loads(run.out)["thresholds"]["gate"]
    assert (gate["max_ttft_increase_pct"], gate["max_decode_tokens_per_s_decrease_pct"], gate["max_peak_memory_increase_pct"]) == (33, 44, 55)
    bad = edgekd("gate", str(build_dir), "--baseline", str(build_dir), "--max-ttft-increase-pct", "-1")
    assert bad.code == 2 and "Traceback" not in bad.err and "max_ttft_increase_pct" in bad.err


def test_json_output_and_overrides(edgekd, build_dir, real_report, tmp_path):
    cand = save(slower(real_report, SLOW), tmp_path / "cand.json")
    run = edgekd("gate", str(cand), "--baseline", str(build_dir), "--json", "--max-latency-increase-pct", "900")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["verdict"] == "pass" and result["thresholds"]["gate"]["max_latency_p90_increase_pct"] == 900
    lat = next(c for c in result["checks"] if c["name"] == "latency p90")
    assert lat["change"] == pytest.approx(200.0) and len(lat["interval"]) == 2


def _bad_inputs(tmp_path: Path, real_report: dict) -> dict[str, tuple[list[str], str]]:
    not_report = tmp_path / "other.json"
    not_report.write_text('{"hello": 1}')
    (tmp_path / "empty").mkdir()
    no_samples = slower(real_report, 1.0)
    del no_samples["latency"]["samples_ms"]
    return {
        "missing": ([str(tmp_path / "nope")], "candidate .*nope: no such file or folder"),
        "not a report": ([str(not_report)], "not an edgekd build report"),
        "folder without report": ([str(tmp_path / "empty")], "no report.json in this folder"),
        "no samples": ([str(save(no_samples, tmp_path / "ns.json"))], "latency measured .* no latency samples"),
        "unknown profile": (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'"),
        "bad confidence": (["--confidence", "2"], "gate option out of range"),
    }


@pytest.mark.parametrize("case", ["missing", "not a report", "folder without report", "no samples", "unknown profile",
                                  "bad confidence"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(edgekd, build_dir, real_report, tmp_path, case):
    import re

    args, message = _bad_inputs(tmp_path, real_report)[case]
    if args[0].startswith("--"):
        args = [str(build_dir), *args]
    out = tmp_path / "out"
    run = edgekd("gate", *args, "--baseline", str(build_dir), "--markdown", str(out / "g.md"), "--junit", str(out / "g.xml"))
    assert run.code == 2
    assert len(run.err.strip().splitlines()) == 1 and "Traceback" not in run.err
    assert re.search(message, run.err), run.err
    assert not out.exists()
