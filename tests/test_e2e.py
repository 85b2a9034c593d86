"""End-to-end: the full build of the built-in example on this machine, the cache, and budgets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write

pytestmark = pytest.mark.slow
STAGES = ["search", "teacher", "assistants", "distill", "export", "quantize", "check", "compile", "evaluate", "bench"]
SHIPPED_CI_PROFILE = Path(__file__).parent.parent / "profiles" / "ci.toml"


def _profile_like_ci(tmp_path: Path, name: str, extra_budgets: str = "", extra_recipe: str = "") -> Path:
    """The shipped ci profile with some budgets/recipe keys replaced."""
    import tomllib

    data = tomllib.loads(SHIPPED_CI_PROFILE.read_text())
    budgets = {**data["budgets"], **tomllib.loads(extra_budgets)}
    lines = ["[budgets]", *(f"{k} = {v!r}" for k, v in budgets.items())]
    overrides = tomllib.loads(extra_recipe)
    for section in {**data["recipe"], **overrides}:
        values = {**data["recipe"].get(section, {}), **overrides.get(section, {})}
        lines += [f"[recipe.{section}]", *(f"{k} = {v!r}" for k, v in values.items())]
    return write(tmp_path / f"{name}.toml", "\n".join(lines).replace("True", "true").replace("False", "false") + "\n")


def test_cold_build_runs_every_stage_with_real_numbers(cold_build):
    assert cold_build.code == 0, cold_build.err
    report = cold_build.report
    assert report["schema_version"] == 1 and report["verdict"] == "pass"
    assert [s["name"] for s in report["stages"]] == STAGES
    assert all(s["status"] == "ran" for s in report["stages"])
    for stage in report["stages"]:
        for name, metric in stage["metrics"].items():  # every number says how it was obtained
            assert metric["method"] in {"measured", "estimated", "not available"}, name
            assert metric["how"], name
        assert all(v["status"] in {"pass", "no budget"} for v in stage["verdicts"])
    checked = {v["budget"] for s in report["stages"] for v in s["verdicts"]}
    assert checked == {"distill_accuracy_drop_pt", "export_parity_max_abs_diff", "export_accuracy_drop_pt",
                       "quantize_accuracy_drop_pt", "quantize_rule_violations", "unsupported_nodes", "fallback_nodes_pct",
                       "fallback_macs_pct", "size_mb", "overall_accuracy_drop_pt", "latency_p90_ms",
                       "peak_memory_mb"}  # the bench worker's peak memory is measured for every model (no budget in this profile)
    acc = {k: v["value"] for k, v in report["accuracy"].items()}
    assert set(acc) == {"teacher", "student", "onnx_fp32", "int8", "engine"}
    assert acc["teacher"] > 90.0  # trained for real on digits; chance is 10 %
    assert acc["engine"] > 80.0
    metrics = {k: m["value"] for s in report["stages"] for k, m in s["metrics"].items()}
    assert metrics["teacher.macs"] >= 10 * metrics["student.macs"]
    assert 0 <= metrics["export.parity_max_abs_diff"] < 1e-4
    assert "built-in example" in report["project"]["via"]
    assert report["target"]["name"].startswith("x86-")


def test_cold_build_latency_is_measured_from_samples(cold_build):
    lat = cold_build.report["latency"]
    samples = np.asarray(lat["samples_ms"])
    assert len(samples) == lat["runs"] >= 100
    assert lat["p90_ms"] == pytest.approx(np.percentile(samples, 90))
    assert lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["intra_op_threads"] >= 1 and lat["batch"] == 1
    assert lat["peak_rss_mb"] > 0


def test_cold_build_writes_the_artefacts(cold_build):
    import onnx
    from safetensors.numpy import load_file

    out = cold_build.out_dir
    for name in ["teacher.safetensors", "student.safetensors", "student.onnx", "student_int8.onnx", "engine.json", "engine/engine.onnx",
                 "bench.json", "report.json", "report.md"]:
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp")) and [p.name for p in out.glob(".*")] == [".edgekd.lock"]  # the folder's lock file stays
    assert load_file(str(out / "student.safetensors"))  # weights are safetensors, not pickles
    int8_ops = {n.op_type for n in onnx.load(str(out / "student_int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops
    md = (out / "report.md").read_text()
    assert "PASS" in md and [line.split()[1] for line in md.splitlines() if line.startswith("### ") and line.split()[1] in STAGES] == STAGES and "## Latency" in md
    assert cold_build.out.strip().splitlines()[-1].startswith("  report")  # the summary ends the output


def test_rebuild_reuses_every_stage(cold_build, edgekd, tmp_path):
    assert cold_build.code == 0
    warm = edgekd("build", "--target", "x86", "--profile", "ci", out_dir=tmp_path / "warm")
    assert warm.code == 0, warm.err
    report = warm.report
    assert [s["status"] for s in report["stages"]] == ["cached"] * len(STAGES)
    assert "cached" in warm.err
    cold_metrics = {s["name"]: s["metrics"] for s in cold_build.report["stages"]}
    assert {s["name"]: s["metrics"] for s in report["stages"]} == cold_metrics
    for name in ["student.onnx", "engine/engine.onnx"]:
        assert (tmp_path / "warm" / name).read_bytes() == (cold_build.out_dir / name).read_bytes()


def test_changing_one_option_reruns_that_stage_and_later_only(cold_build, edgekd, tmp_path):
    assert cold_build.code == 0
    profile = _profile_like_ci(tmp_path, "percentile", extra_recipe='[quantize]\ncalibrate_method = "percentile"')
    run = edgekd("build", "--target", "x86", "--profile", str(profile), out_dir=tmp_path / "out")
    assert run.code == 0, run.err
    status = {s["name"]: s["status"] for s in run.report["stages"]}
    assert status == {"search": "cached", "teacher": "cached", "assistants": "cached", "distill": "cached", "export": "cached", "quantize": "ran",
                      "check": "ran", "compile": "ran", "evaluate": "ran", "bench": "ran"}
    notes = next(s for s in run.report["stages"] if s["name"] == "quantize")["notes"]
    assert any("percentile calibration" in n for n in notes)


def test_unmeetable_latency_budget_exits_1_and_still_reports(cold_build, edgekd, tmp_path):
    assert cold_build.code == 0
    profile = _profile_like_ci(tmp_path, "too-fast", extra_budgets="latency_p90_ms = 0.000001")
    run = edgekd("build", "--target", "x86", "--profile", str(profile), out_dir=tmp_path / "out")
    assert run.code == 1
    assert "budget violated after stage 'bench'" in run.err and "Traceback" not in run.err
    report = run.report
    assert report["verdict"] == "fail"
    assert [(v["stage"], v["budget"]) for v in report["failed_budgets"]] == [("bench", "latency_p90_ms")]
    assert report["failed_budgets"][0]["value"] > report["failed_budgets"][0]["limit"]
    assert "**FAIL" in (tmp_path / "out" / "report.md").read_text()


def test_violation_stops_the_build_at_that_stage(cold_build, edgekd, tmp_path):
    assert cold_build.code == 0
    out = tmp_path / "out"
    write(out / "engine" / "engine.onnx", "stale engine from an earlier build")
    profile = _profile_like_ci(tmp_path, "tiny", extra_budgets="size_mb = 0.0001")
    run = edgekd("build", "--target", "x86", "--profile", str(profile), out_dir=out)
    assert run.code == 1
    status = {s["name"]: s["status"] for s in run.report["stages"]}
    assert status["quantize"] == "cached" and status["compile"] == status["bench"] == "not run"
    assert not (out / "engine").exists() and not (out / "engine.json").exists()  # the folder shows this build only
    assert json.loads((out / "report.json").read_text())["latency"] is None


def test_reports_match_the_json_schema(cold_build, edgekd, tmp_path):
    """The cold report and a failed one both validate against the schema kept in the repo."""
    import jsonschema

    from edgekd.report.build_report import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(cold_build.report, schema)
    profile = _profile_like_ci(tmp_path, "tiny", extra_budgets="size_mb = 0.0001")
    failed = edgekd("build", "--target", "x86", "--profile", str(profile), out_dir=tmp_path / "out")
    assert failed.code == 1
    jsonschema.validate(failed.report, schema)
    broken = {**cold_build.report, "accuracy": {"teacher": {"value": 99.0, "unit": "%"}}}  # no provenance
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
