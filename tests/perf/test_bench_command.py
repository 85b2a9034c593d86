"""`edgekd bench BUILD_DIR|MODEL --target T`: scenarios, raw samples, op profile, the build's
report updated, estimates for device-only targets, and clear errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from edgekd.report.build_report import SCHEMA_FILE

FAST = ("--profile", "ci")


@pytest.fixture
def build_copy(cold_build, tmp_path: Path) -> Path:
    return Path(shutil.copytree(cold_build.out_dir, tmp_path / "build"))


def test_bench_build_folder_replaces_the_latency_in_its_report(edgekd, build_copy: Path) -> None:
    before = json.loads((build_copy / "report.json").read_text())
    run = edgekd("bench", str(build_copy), *FAST)
    assert run.code == 0, run.err
    report = json.loads((build_copy / "report.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    lat = report["latency"]
    assert lat["samples_ms"] != before["latency"]["samples_ms"] and len(lat["samples_ms"]) == lat["runs"]
    assert "edgekd bench" in lat["where"] and lat["measured_at"]
    assert lat["intra_op_threads"] == before["tuning"]["rows"][before["tuning"]["chosen"]]["threads"]  # the tuned settings
    bench_stage = next(s for s in report["stages"] if s["name"] == "bench")
    assert bench_stage["metrics"]["latency.p90_ms"]["value"] == lat["p90_ms"]
    assert [v["budget"] for v in bench_stage["verdicts"]] == ["latency_p90_ms", "peak_memory_mb"]  # peak memory: measured here too
    assert bench_stage["metrics"]["latency.peak_rss_mb"]["value"] == lat["peak_rss_mb"]
    assert lat["compare"]["engine"]["p90_ms"] == lat["p90_ms"]
    assert "SingleStream" in run.out and "Offline" in run.out
    assert "`latency.samples_ms`" in (build_copy / "report.md").read_text()


def test_bench_model_json_has_both_scenarios_and_top_ops(edgekd, cold_build, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    run = edgekd("bench", str(cold_build.out_dir / "student_int8.onnx"), "--target", "x86", *FAST, "--json", "--out", str(out))
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result == json.loads(out.read_text())
    assert result["method"] == "measured" and len(result["samples_ms"]) == result["runs"]
    assert result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["cv"] > 0 and result["peak_rss_mb"] > 0
    offline = result["scenarios"]["Offline"]
    assert offline["best_batch"] in [b["batch"] for b in offline["batches"]]
    assert result["top_ops"] and result["top_ops"][0]["pct"] > 0
    assert {"SingleStream", "Offline"} == set(result["scenarios"])


def test_single_scenario_and_thread_override(edgekd, cold_build) -> None:
    run = edgekd("bench", str(cold_build.out_dir / "student.onnx"), "--target", "x86", *FAST,
                 "--scenario", "SingleStream", "--threads", "1", "--json")
    result = json.loads(run.out)
    assert set(result["scenarios"]) == {"SingleStream"} and result["intra_op_threads"] == 1


def test_device_only_target_is_estimated_and_says_so(edgekd, cold_build) -> None:
    run = edgekd("bench", str(cold_build.out_dir / "student_int8.onnx"), "--target", "jetson-orin", "--json")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["method"] == "estimated" and "samples_ms" not in result
    assert "estimated, not measured" in result["where"] and result["p90_ms"] > 0


@pytest.mark.parametrize("args, message", [
    (("bench", "MODEL"), "a model needs --target"),
    (("bench", "NOTONNX", "--target", "x86"), "not a valid ONNX model"),
    (("bench", "EMPTYDIR"), "is not a build folder"),
])
def test_bad_input_is_one_line_exit_2(edgekd, cold_build, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    (tmp_path / "bad.onnx").write_text("not onnx")
    (tmp_path / "empty").mkdir()
    paths = {"MODEL": str(cold_build.out_dir / "student.onnx"), "NOTONNX": str(tmp_path / "bad.onnx"), "EMPTYDIR": str(tmp_path / "empty")}
    run = edgekd(*(paths.get(a, a) for a in args))
    assert run.code == 2 and message in run.err and "Traceback" not in run.err
    assert len(run.err.strip().splitlines()) == 1


# ---------------------------------------------------------------- real architectures (tests/conftest.py zoo)

FAST_BENCH = """
[recipe.bench]
warmup_runs = 3
min_runs = 10
max_runs = 40
max_seconds = 0.5
offline_max_batch = 4
offline_seconds = 0.05
profile_runs = 2
"""


@pytest.mark.parametrize("arch,exporter", __import__("helpers").ZOO)
def test_bench_every_zoo_model_on_x86(edgekd, zoo, tmp_path: Path, arch: str, exporter: str) -> None:
    """Every input fed (token ids inside the vocabulary, masks, empty past), both scenarios, op profile."""
    from helpers import write

    profile = write(tmp_path / "fast.toml", FAST_BENCH)
    run = edgekd("bench", str(zoo(arch, exporter)), "--target", "x86", "--profile", str(profile), "--json")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert result["method"] == "measured" and result["runs"] >= 10 and result["top_ops"]
    batches = [b["batch"] for b in result["scenarios"]["Offline"]["batches"]]
    assert batches[0] == 1 and (batches == [1] or batches[1] == 2)  # a dynamic batch is scaled along every input
    assert "generated inputs" in result["where"] and result["inputs"].count(" 1x") >= 1


def test_bench_with_a_shape_override(edgekd, zoo) -> None:
    run = edgekd("bench", str(zoo("gpt2", "optimum")), "--target", "x86", *FAST, "--scenario", "SingleStream",
                 "--shape", "input_ids=1x1", "--shape", "past_key_values.0.key=1x2x32x16", "--json")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    assert "attention_mask int64 1x33" in result["inputs"] and "past_key_values.1.value float32 1x2x32x16" in result["inputs"]
    bad = edgekd("bench", str(zoo("gpt2", "optimum")), "--target", "x86", "--shape", "input_ids=1x2x3")
    assert bad.code == 2 and "has rank 3, but input 'input_ids' has rank 2" in bad.err
